"""Sample pane: stream text from a checkpoint, one token at a time, and stop it mid-way; or
draw several samples at once and see their quality figures.

The sampling job (`lal_tui.work.tasks.sampling`) posts its messages here: one `SampleToken`
per drawn token, which this pane appends before it redraws the text. `v` cycles the view:
plain text, token boundaries, or each token coloured by the probability it was drawn with.
With more than one sample (the `samples` field) they are drawn as one batch: each shows whole
as it ends (`SampleEnded`), and the figures of `lal report` follow (`SampleFigures`).
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
from lal_tui.widgets.run_picker import RunPicker
from lal_tui.work.messages import (
    EngineError,
    SampleEnded,
    SampleFigures,
    SampleFinished,
    SampleStarted,
    SampleToken,
)
from lal_tui.work.tasks import SampleRequest

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
    @on(SampleStarted)
    def begin(self, message: SampleStarted) -> None:
        samples, checkpoint = message.samples, message.checkpoint
        self.prompt, self.pieces, self.ended = message.prompt, [], {}
        self.samples = samples
        self.render_output()
        what = f"{samples} samples" if samples > 1 else "generating"
        where = f"{checkpoint.parent.name}/{checkpoint.name}"
        self.set_status(f"{what} from {where} … (x to stop)")

    @on(SampleToken)
    def add_token(self, message: SampleToken) -> None:
        self.pieces.append((message.text, message.prob))
        self.render_output()

    @on(SampleEnded)
    def add_sample(self, message: SampleEnded) -> None:
        """One of several samples has ended: it shows whole, in its place."""
        self.ended[message.row] = (message.seed, message.text)
        self.render_output()
        self.set_status(f"{len(self.ended)}/{self.samples} samples done … (x to stop)")

    @on(SampleFigures)
    def show_figures(self, message: SampleFigures) -> None:
        self.figures = message.line
        self.set_status(f"{len(self.ended)} samples: {message.line}")

    @on(SampleFinished)
    def finish(self, message: SampleFinished) -> None:
        tokens, seconds = message.tokens, message.seconds
        rate = tokens / seconds if seconds > 0 else 0.0
        word = "stopped after" if message.stopped else "done:"
        view = f" · view {self.view} (v)" if self.samples == 1 else " · figures next…"
        self.set_status(f"{word} {tokens} tokens, {rate:,.1f} tok/s{view}")

    @on(EngineError)
    def failed(self, message: EngineError) -> None:
        if not message.stale:
            self.set_status(f"error: {message.message}")

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
