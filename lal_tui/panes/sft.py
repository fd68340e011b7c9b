"""SFT pane: which tokens count in the loss, the fine-tune with its masked loss, before/after.

The chat example is drawn token by token from `lal_core.sft.token_mask`: the answer tokens that
count in the loss are highlighted (alternating shades show token boundaries), the prompt tokens
whose targets are -1 are dimmed. The fine-tune's events (`SFTEvent`, from the job that follows
it: `lal_tui.work.following`) and the answers to a question (`SFTAnswer`) are posted here.

At each epoch's end the fine-tune answers a training question and a held-out one (in that
order), streamed as they are written, with the share of answers the model closed itself (by
the end marker): the chat format emerging, epoch after epoch (`widgets.eval_samples`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static
from textual_plotext import PlotextPlot

from lal_core.errors import LalError
from lal_core.runs.events import (
    CheckpointSaved,
    Preparing,
    RunFailed,
    RunFinished,
    RunStarted,
    SFTEpochDone,
    StepDone,
)
from lal_core.runs.folder import RunDir
from lal_core.sft import (
    DEFAULT_SEED,
    HELD_OUT_QUESTION,
    builtin_pairs,
    chat_answer,
    chat_prompt,
    token_mask,
)
from lal_tui.widgets.eval_samples import SAMPLE_EVENTS, EvalSamples, SampleBook, render_sample
from lal_tui.widgets.loss_plot import Series, draw
from lal_tui.widgets.run_picker import RunPicker
from lal_tui.work.messages import EngineError, JobEnded, SFTAnswer, SFTEvent

COUNTED_STYLES = ("black on green", "black on bright_green")
MASKED_STYLE = "dim"
REDRAW_SECONDS = 0.25  # at most 4 redraws a second: the run shares the cores
QUESTION_KINDS = ("training question", "held-out question")  # the epoch answers' prompts


def render_mask(pieces: list[tuple[str, bool]]) -> Text:
    text = Text()
    counted = 0
    for piece, counts in pieces:
        if counts:
            text.append(piece, style=COUNTED_STYLES[counted % 2])
            counted += 1
        else:
            text.append(piece, style=MASKED_STYLE)
    return text


class SFTPane(Vertical):
    @dataclass
    class FineTuneRequested(Message):
        """f: fine-tune this run's best checkpoint."""

        run_path: str

    @dataclass
    class AskRequested(Message):
        """a, enter, or a fine-tune ended: answer `question` from each checkpoint in `kinds`."""

        run_path: str
        question: str
        kinds: Sequence[str]
        seed: int

    BINDINGS = [
        Binding("f", "fine_tune", "Fine-tune"),
        Binding("e", "next_example", "Next example"),
        Binding("a", "ask", "Ask"),
    ]

    def __init__(self, runs_dir: Path | None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        with Horizontal(id="sft-pick"):
            yield Label("base run", classes="field-label")
            yield RunPicker(
                self.runs_dir,
                usable=lambda run: run.best_val is not None,
                prompt="base run",
                id="sft-run",
            )
        with VerticalScroll(id="sft-scroll"):
            yield Static("", id="sft-example")
            yield Static("", id="sft-legend")
            yield PlotextPlot(id="sft-plot")
            yield Static("", id="sft-epoch-answers", classes="answer")
            with Horizontal(id="sft-answers"):
                yield Static("before (best): -", id="sft-before", classes="answer")
                yield Static("after (sft): -", id="sft-after", classes="answer")
        yield Input(
            placeholder=f"ask your own question (enter), e.g. {HELD_OUT_QUESTION}",
            id="sft-question",
            compact=True,
        )
        yield Static("f: fine-tune the base run (5 epochs, answer tokens only)", id="sft-status")

    def on_mount(self) -> None:
        self.pairs = builtin_pairs()
        self.example_index = 0
        self.example_pieces: list[tuple[str, bool]] = []
        self.steps: list[float] = []
        self.epoch_ends: list[int] = []
        self.epoch_losses: list[float] = []
        self.answers = SampleBook()
        self.epochs = (0, 0)  # (the last epoch ended, of how many)
        self.answers_shown: int | None = None  # the iteration whose answers are on show
        self.dirty = False
        self.answers_dirty = True
        self.show_example()
        self.redraw()
        self.set_interval(REDRAW_SECONDS, self.tick)

    # -- runs and the example -----------------------------------------------------------------
    @property
    def picker(self) -> RunPicker:
        return self.query_one(RunPicker)

    @property
    def run_path(self) -> str | None:
        return self.picker.run_path

    def block_size(self) -> int | None:
        if self.run_path is None:
            return None
        try:
            return RunDir(self.run_path).read().model_config.block_size
        except LalError:
            return None

    @on(Select.Changed, "#sft-run")
    def run_changed(self) -> None:
        self.show_example()

    def show_example(self) -> None:
        pair = self.pairs[self.example_index % len(self.pairs)]
        block = self.block_size()
        try:
            self.example_pieces = token_mask(pair, block)
        except LalError as exc:
            self.notify(str(exc), severity="error", title="sft")
            return
        self.example_text = render_mask(self.example_pieces)
        self.query_one("#sft-example", Static).update(self.example_text)
        counted = sum(c for _, c in self.example_pieces)
        masked = len(self.example_pieces) - counted
        whole = chat_prompt(pair.question) + chat_answer(pair.answer)
        cut = "".join(t for t, _ in self.example_pieces) != whole
        fit = f" (cut from the left to the {block}-token context)" if cut else ""
        self.query_one("#sft-legend", Static).update(
            f"example {self.example_index % len(self.pairs) + 1}/{len(self.pairs)}{fit}: "
            f"highlighted = {counted} answer tokens counted in the loss; "
            f"dimmed = {masked} prompt tokens masked (target -1)"
        )

    def action_next_example(self) -> None:
        self.example_index += 1
        self.show_example()

    # -- fine-tuning --------------------------------------------------------------------------
    def action_fine_tune(self) -> None:
        if self.run_path is None:
            self.notify("no base run with a best checkpoint; train one first", severity="error")
            return
        self.post_message(self.FineTuneRequested(self.run_path))

    def follow_started(self, line: str) -> None:
        """The app follows a fine-tune here now (it is starting)."""
        self.set_status(line)

    def stop_asked(self) -> None:
        self.set_status("stopping after this batch…")

    @on(SFTEvent)
    def record(self, message: SFTEvent) -> None:
        if not self.app.is_running:
            return  # shutting down: what the follower had queued can go
        event = message.event
        if isinstance(event, SAMPLE_EVENTS):
            self.answers.record(event)  # a piece of an answer: drawn on the timer
            self.answers_dirty = True
            return
        if isinstance(event, RunStarted):
            self.steps, self.epoch_ends, self.epoch_losses = [], [], []
            self.answers, self.epochs, self.answers_dirty = SampleBook(), (0, 0), True
            self.set_status(event.header)
        elif isinstance(event, StepDone):
            self.steps.append(event.loss)
        elif isinstance(event, SFTEpochDone):
            self.epoch_ends.append(len(self.steps) - 1)
            self.epoch_losses.append(event.masked_loss)
            self.epochs = (event.epoch, event.epochs)
            self.set_status(event.line)
        elif isinstance(event, Preparing):
            self.set_status(event.line)
        elif isinstance(event, CheckpointSaved):
            self.set_status(f"saved {event.path}")
        elif isinstance(event, RunFinished):
            self.set_status(event.line)
        elif isinstance(event, RunFailed):
            self.set_status(f"failed: {event.message}")
        self.dirty = True

    @on(JobEnded)
    def job_ended(self, message: JobEnded) -> None:
        """Fine-tuning returned; with a new sft checkpoint, ask the example's question again."""
        if message.group != "sft" or message.stale or not self.app.is_running:
            return
        self.dirty = True
        result = message.result
        saved = isinstance(result, RunFinished) and result.status in ("completed", "stopped")
        if saved and self.run_path is not None:
            pair = self.pairs[self.example_index % len(self.pairs)]
            self.ask(pair.question)

    def tick(self) -> None:
        if not self.is_on_screen:
            return
        if self.dirty:
            self.redraw()
        if self.answers_dirty:
            self.redraw_answers()

    def redraw_answers(self) -> None:
        newest = self.answers.newest()
        box = self.query_one("#sft-epoch-answers", Static)
        box.border_title = epoch_title(newest, *self.epochs)
        box.update(epoch_answers(newest))
        if newest is not None and newest.iteration != self.answers_shown:
            self.answers_shown = newest.iteration
            box.scroll_visible(animate=False, top=True)  # a new epoch's answers: in view
        self.answers_dirty = False

    def redraw(self) -> None:
        series = [
            Series("batch loss", list(range(len(self.steps))), self.steps, "gray"),
            Series("epoch mean", self.epoch_ends, self.epoch_losses, "orange", marker="dot"),
        ]
        title = "masked loss (answer tokens only)"
        if not self.steps:
            title += ": press f to fine-tune"
        draw(self.query_one("#sft-plot", PlotextPlot), title, series, [], False)
        self.dirty = False

    # -- questions ----------------------------------------------------------------------------
    @on(Input.Submitted, "#sft-question")
    def action_ask(self) -> None:
        question = self.query_one("#sft-question", Input).value.strip() or HELD_OUT_QUESTION
        self.ask(question)

    def ask(self, question: str) -> None:
        if self.run_path is None:
            self.notify("no base run to ask; train one first", severity="error")
            return
        kinds = ["best"]
        if RunDir(self.run_path).checkpoint("sft").is_file():
            kinds.append("sft")
        self.query_one("#sft-before", Static).update(f"before (best): {question}\n…")
        self.query_one("#sft-after", Static).update(
            f"after (sft): {question}\n" + ("…" if "sft" in kinds else "(fine-tune first: f)")
        )
        self.post_message(self.AskRequested(self.run_path, question, tuple(kinds), DEFAULT_SEED))

    @on(SFTAnswer)
    def show_answer(self, message: SFTAnswer) -> None:
        before = message.which == "before"
        title = "before (best)" if before else "after (sft)"
        self.query_one("#sft-before" if before else "#sft-after", Static).update(
            Text.assemble((f"{title}: {message.question}\n", "bold"), message.answer)
        )

    @on(EngineError)
    def failed(self, message: EngineError) -> None:
        if not message.stale:
            self.set_status(f"error: {message.message}")

    def set_status(self, text: str) -> None:
        self.query_one("#sft-status", Static).update(text)


def epoch_title(answers: EvalSamples | None, epoch: int, epochs: int) -> str:
    """The epoch answers' title: after which epoch and step, and the share the model closed."""
    if answers is None:
        return "answers at each epoch's end"
    at = f"epoch {epoch}/{epochs}, " if epoch else ""
    parts = [f"answers after {at}step {answers.iteration}"]
    figures = answers.figures
    if answers.status == "drawing":
        parts.append("writing…")
    elif figures is not None and figures.closed is not None:
        closed = round(figures.closed * figures.samples)
        parts.append(f"closed {closed}/{figures.samples} ({figures.closed:.0%})")
    elif answers.status != "done":
        parts.append(answers.status)
    return " · ".join(parts)


def epoch_answers(answers: EvalSamples | None) -> Text:
    """Each question (dimmed, under what it is) and the answer written to it so far."""
    if answers is None:
        return Text("fine-tuning answers a training question and a held-out one here", "dim")
    if answers.status == "failed" and answers.line:
        return Text(answers.line, style="red")
    out = Text()
    for i in range(answers.count):
        if i:
            out.append("\n\n")
        if answers.count == len(QUESTION_KINDS):
            out.append(f"{QUESTION_KINDS[i]}\n", style="italic dim")
        out.append_text(render_sample(answers.prompt(i), answers.text(i), inline=False))
    return out
