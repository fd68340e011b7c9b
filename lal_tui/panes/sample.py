"""Sample pane: stream text from a checkpoint, one token at a time, and stop it mid-way.

The sampling worker posts one `SampleToken` per drawn token; this pane appends it and redraws
the text. `v` cycles the view: plain text, token boundaries, or each token coloured by the
probability it was drawn with.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Select, Static

from lal_core.errors import LalError
from lal_core.runs import CHECKPOINT_KINDS, list_runs

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
    BINDINGS = [
        Binding("g", "app.generate", "Generate"),
        Binding("v", "cycle_view", "View"),
        Binding("r", "refresh_runs", "Reload runs", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Horizontal(id="sample-pick"):
            yield Select([], prompt="run", id="sample-run", compact=True)
            yield Select(
                [(k, k) for k in CHECKPOINT_KINDS],
                value="best",
                allow_blank=False,
                id="sample-kind",
                compact=True,
            )
        with Horizontal(id="sample-params"):
            yield Input("ROMEO:", placeholder="prompt", id="prompt", compact=True)
            yield Label("temp", classes="field-label")
            yield Input("0.8", id="temperature", compact=True, classes="num")
            yield Label("top-k", classes="field-label")
            yield Input("50", id="top-k", compact=True, classes="num")
            yield Label("tokens", classes="field-label")
            yield Input("200", id="tokens", compact=True, classes="num")
            yield Label("seed", classes="field-label")
            yield Input("", placeholder="any", id="seed", compact=True, classes="num")
        with VerticalScroll(id="sample-scroll"):
            yield Static("", id="sample-output")
        yield Static("pick a run, then g (or enter in the prompt) to generate", id="sample-status")

    def on_mount(self) -> None:
        self.view = "plain"
        self.prompt = ""
        self.pieces: list[tuple[str, float]] = []
        self.refresh_runs()

    # -- runs ---------------------------------------------------------------------------------
    def refresh_runs(self, select: str | None = None) -> None:
        try:
            runs = list_runs(self.app.settings.runs_dir)
        except (OSError, LalError) as exc:
            self.app.notify(str(exc), severity="error", title="runs")
            runs = []
        select_run = self.query_one("#sample-run", Select)
        current = select or (None if select_run.is_blank() else select_run.value)
        options = []
        for r in reversed(runs):
            best = f"{r.best_val:.3f}" if r.best_val is not None else "-"
            options.append((f"{r.run_id} · {r.status} · best {best}", str(r.path)))
        select_run.set_options(options)
        values = [v for _, v in options]
        if current in values:
            select_run.value = current
        elif values:
            select_run.value = values[0]

    def action_refresh_runs(self) -> None:
        self.refresh_runs()

    def request(self) -> dict:
        """The sampling request from the fields; raises LalError with one line if one is bad."""
        select = self.query_one("#sample-run", Select)
        if select.is_blank():
            raise LalError("no run to sample from; train one first (key 2, then t)")

        def number(field_id: str, kind, label: str, optional: bool = False):
            text = self.query_one(f"#{field_id}", Input).value.strip()
            if optional and not text:
                return None
            try:
                return kind(text)
            except ValueError:
                raise LalError(f"{label} must be a number, got {text!r}") from None

        return {
            "ref": str(select.value),
            "kind": str(self.query_one("#sample-kind", Select).value),
            "prompt": self.query_one("#prompt", Input).value.replace("\\n", "\n"),
            "temperature": number("temperature", float, "temperature"),
            "top_k": number("top-k", int, "top-k", optional=True),
            "tokens": number("tokens", int, "tokens"),
            "seed": number("seed", int, "seed", optional=True),
        }

    @on(Input.Submitted, "#sample-params Input")
    def submitted(self) -> None:
        self.app.action_generate()

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
