"""Sample pane: stream text from a checkpoint, one token at a time, and stop it mid-way.

The sampling worker posts one `SampleToken` per drawn token; this pane appends it and redraws
the text. `v` cycles the view: plain text, token boundaries, or each token coloured by the
probability it was drawn with.
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
from lal_core.runs import CHECKPOINT_KINDS
from lal_core.sampling import (
    DEFAULT_PROMPT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOKENS,
    DEFAULT_TOP_K,
)
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
    def begin(self, prompt: str, checkpoint: str) -> None:
        self.prompt, self.pieces = prompt, []
        self.render_output()
        self.set_status(f"generating from {checkpoint} … (x to stop)")

    def add_token(self, text: str, prob: float) -> None:
        self.pieces.append((text, prob))
        self.render_output()

    def finish(self, tokens: int, seconds: float, stopped: bool) -> None:
        rate = tokens / seconds if seconds > 0 else 0.0
        word = "stopped after" if stopped else "done:"
        self.set_status(f"{word} {tokens} tokens, {rate:,.1f} tok/s · view {self.view} (v)")

    @property
    def output_text(self) -> str:
        return self.prompt + "".join(t for t, _ in self.pieces)

    def render_output(self) -> None:
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
