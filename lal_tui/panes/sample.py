"""Sample pane: stream text from a checkpoint, one token at a time, and stop it mid-way; or
draw several samples at once and see their quality figures.

The sampling worker posts one `SampleToken` per drawn token; this pane appends it and redraws
the text. `v` cycles the view: plain text, token boundaries, or each token coloured by the
probability it was drawn with. With more than one sample (the `samples` field) they are drawn as
one batch: each shows whole as it ends (`SampleEnded`), and the figures of `lal report` follow
(`SampleFigures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static

from lal_core.errors import LalError
from lal_core.generation.sampling import (
    DEFAULT_PROMPT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOKENS,
    DEFAULT_TOP_K,
)
from lal_core.runs.folder import CHECKPOINT_KINDS
from lal_tui.engine_jobs import SampleRequest
from lal_tui.widgets.run_picker import RunPicker

VIEWS = ("plain", "boundaries", "probability")
# probability bands: readable in 16 colours
PROB_STYLES = ((0.5, "green"), (0.2, "yellow"), (0.05, "magenta"), (0.0, "red"))
BOUNDARY_STYLES = ("reverse", "")


def prob_style(prob: float) -> str:
    for floor, style in PROB_STYLES:
        if prob >= floor:
            return style
    return "red"


def render_sample(prompt: str, pieces: list[tuple[str, float]], view: str) -> Text:
    text = Text(prompt, style="bold")
    for i, (piece, prob) in enumerate(pieces):
        if view == "probability":
            style = prob_style(prob)
        elif view == "boundaries":
            style = BOUNDARY_STYLES[i % 2]
        else:
            style = ""
        text.append(piece, style=style)
    return text


def render_samples(prompt: str, ended: dict[int, tuple[int, str]]) -> Text:
    """Several samples, each under a line naming it and its seed (which draws it again)."""
    text = Text()
    for row in sorted(ended):
        seed, body = ended[row]
        text.append(f"── sample {row + 1} · seed {seed} ──\n", style="dim")
        text.append(prompt, style="bold")
        text.append(body + "\n\n")
    return text


class SamplePane(Vertical):
    @dataclass
    class GenerateRequested(Message):
        """g or enter: generate with these fields (already checked to be numbers)."""

        request: SampleRequest

    BINDINGS = [
        Binding("g", "generate", "Generate"),
        Binding("v", "cycle_view", "View"),
        Binding("r", "reload_runs", "Reload runs", show=False),
    ]

    def __init__(self, runs_dir: Path | None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        with Horizontal(id="sample-pick"):
            yield RunPicker(self.runs_dir, id="sample-run")
            yield Select(
                [(k, k) for k in CHECKPOINT_KINDS],
                value="best",
                allow_blank=False,
                id="sample-kind",
                compact=True,
            )
        with Horizontal(id="sample-params"):
            yield Input(DEFAULT_PROMPT, placeholder="prompt", id="prompt", compact=True)
            for field_id, label, default in (
                ("temperature", "temp", DEFAULT_TEMPERATURE),
                ("top-k", "top-k", DEFAULT_TOP_K),
                ("tokens", "tokens", DEFAULT_TOKENS),
                ("samples", "samples", 1),
            ):
                yield Label(label, classes="field-label")
                yield Input(str(default), id=field_id, compact=True, classes="num")
            yield Label("seed", classes="field-label")
            yield Input("", placeholder="any", id="seed", compact=True, classes="num")
        with VerticalScroll(id="sample-scroll"):
            yield Static("", id="sample-output")
        yield Static("pick a run, then g (or enter in the prompt) to generate", id="sample-status")

    def on_mount(self) -> None:
        self.view = "plain"
        self.prompt = ""
        self.pieces: list[tuple[str, float]] = []
        self.samples = 1
        self.ended: dict[int, tuple[int, str]] = {}  # row: (seed, text), of several samples
        self.figures = ""

    @property
    def picker(self) -> RunPicker:
        return self.query_one(RunPicker)

    def action_reload_runs(self) -> None:
        self.picker.reload()

    def request(self) -> SampleRequest:
        """The sampling request from the fields; raises LalError with one line if one is bad."""
        run = self.picker.run_path
        if run is None:
            raise LalError("no run to sample from; train one first (key 2, then t)")

        def number(field_id: str, kind: type, optional: bool = False):
            text = self.query_one(f"#{field_id}", Input).value.strip()
            if optional and not text:
                return None
            try:
                return kind(text)
            except ValueError:
                raise LalError(f"{field_id} must be a number, got {text!r}") from None

        return SampleRequest(
            ref=run,
            kind=str(self.query_one("#sample-kind", Select).value),
            prompt=self.query_one("#prompt", Input).value.replace("\\n", "\n"),
            temperature=number("temperature", float),
            top_k=number("top-k", int, optional=True),
            tokens=number("tokens", int),
            seed=number("seed", int, optional=True),
            samples=number("samples", int),
        )

    @on(Input.Submitted, "#sample-params Input")
    def action_generate(self) -> None:
        try:
            request = self.request()
        except LalError as exc:
            self.notify(str(exc), severity="error")
            return
        self.post_message(self.GenerateRequested(request))

    # -- streaming ----------------------------------------------------------------------------
    def begin(self, prompt: str, checkpoint: str, samples: int = 1) -> None:
        self.prompt, self.pieces, self.ended = prompt, [], {}
        self.samples = samples
        self.render_output()
        what = f"{samples} samples" if samples > 1 else "generating"
        self.set_status(f"{what} from {checkpoint} … (x to stop)")

    def add_sample(self, row: int, seed: int, text: str) -> None:
        """One of several samples has ended: it shows whole, in its place."""
        self.ended[row] = (seed, text)
        self.render_output()
        self.set_status(f"{len(self.ended)}/{self.samples} samples done … (x to stop)")

    def show_figures(self, line: str) -> None:
        self.figures = line
        self.set_status(f"{len(self.ended)} samples: {line}")

    def add_token(self, text: str, prob: float) -> None:
        self.pieces.append((text, prob))
        self.render_output()

    def finish(self, tokens: int, seconds: float, stopped: bool) -> None:
        rate = tokens / seconds if seconds > 0 else 0.0
        word = "stopped after" if stopped else "done:"
        view = f" · view {self.view} (v)" if self.samples == 1 else " · figures next…"
        self.set_status(f"{word} {tokens} tokens, {rate:,.1f} tok/s{view}")

    @property
    def output_text(self) -> str:
        if self.samples > 1:
            return str(self.rendered)
        return self.prompt + "".join(t for t, _ in self.pieces)

    def render_output(self) -> None:
        if self.samples > 1:
            self.rendered = render_samples(self.prompt, self.ended)
        else:
            self.rendered = render_sample(self.prompt, self.pieces, self.view)
        self.query_one("#sample-output", Static).update(self.rendered)
        self.query_one("#sample-scroll", VerticalScroll).scroll_end(animate=False)

    def set_status(self, text: str) -> None:
        self.query_one("#sample-status", Static).update(text)

    def action_cycle_view(self) -> None:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        self.render_output()
        legend = {
            "plain": "plain text",
            "boundaries": "token boundaries (alternate tokens reversed)",
            "probability": "p ≥ 0.5 green, ≥ 0.2 yellow, ≥ 0.05 magenta, else red",
        }[self.view]
        self.set_status(f"view {self.view}: {legend}")
