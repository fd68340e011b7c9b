"""The samples a run draws after each eval, as they are written: their record and a view.

A run draws a few short samples after every eval (fine-tuning: two answers at every epoch's
end), the same prompts and seeds each time, so what changes from one to the next is the model.
Its log says `SamplesStarted`, then one `SampleText` per piece of text as it is drawn (hundreds a
second, sample 0 whole, then 1, ...), then `SamplesDone` with the whole texts and their figures.

`SampleBook` keeps every eval's samples (an append per piece: a followed run's whole log is
replayed at once); `SampleView` shows one sample of one eval: the newest as it streams, or, once
stepped back, an earlier eval's (the same prompt, so the same sample is compared across evals),
until stepped forward to the newest again. It is drawn only when its owner calls `redraw()` (on
a timer, a few times a second at most), never per piece.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text
from textual.widgets import Static

from lal_core.runs.events import Event, SamplesDone, SamplesStarted, SampleText
from lal_core.runs.records import Figures

PROMPT_STYLE = "dim"
NEWLINE = "↵ "  # a newline shown in place: a few rows hold a whole sample's lines
NEWLINE_STYLE = "dim"
SAMPLE_EVENTS = (SamplesStarted, SampleText, SamplesDone)


@dataclass
class EvalSamples:
    """The samples drawn at one iteration, as far as they have come."""

    iteration: int
    prompts: tuple[str, ...] = ()
    pieces: list[list[str]] = field(default_factory=list)  # per sample, its text so far
    current: int = 0  # the sample being drawn (the last one with text)
    status: str = "drawing"  # then SamplesDone's: "done", "stopped" or "failed"
    figures: Figures | None = None
    held_out: Figures | None = None
    line: str = ""  # failed: why

    @property
    def count(self) -> int:
        return max(len(self.prompts), len(self.pieces))

    def text(self, index: int) -> str:
        """Sample `index`'s text so far, without its prompt."""
        return "".join(self.pieces[index]) if index < len(self.pieces) else ""

    def prompt(self, index: int) -> str:
        return self.prompts[index] if index < len(self.prompts) else ""

    def add(self, index: int, text: str) -> None:
        while len(self.pieces) <= index:
            self.pieces.append([])
        self.pieces[index].append(text)
        self.current = index


class SampleBook:
    """Every eval's samples, by iteration, oldest first."""

    def __init__(self) -> None:
        self.evals: dict[int, EvalSamples] = {}
        self.order: list[int] = []  # iterations, ascending

    def __len__(self) -> int:
        return len(self.order)

    def newest(self) -> EvalSamples | None:
        return self.evals[self.order[-1]] if self.order else None

    def get(self, iteration: int) -> EvalSamples:
        """The eval's samples, begun if this is the first word of them."""
        found = self.evals.get(iteration)
        if found is None:
            found = self.evals[iteration] = EvalSamples(iteration)
            if self.order and self.order[-1] > iteration:
                # a resumed run draws again from where it resumed: the later ones are gone
                for later in [it for it in self.order if it > iteration]:
                    del self.evals[later]
                self.order = [it for it in self.order if it < iteration]
            self.order.append(iteration)
        return found

    def record(self, event: Event) -> EvalSamples | None:
        """Fold in one of the three sample events; None for any other event."""
        if isinstance(event, SampleText):
            found = self.get(event.iteration)
            found.add(event.index, event.text)
        elif isinstance(event, SamplesStarted):
            found = self.get(event.iteration)
            found.prompts, found.pieces, found.current = event.prompts, [], 0
            found.status, found.figures, found.line = "drawing", None, ""
        elif isinstance(event, SamplesDone):
            found = self.get(event.iteration)
            found.prompts = event.prompts or found.prompts
            while len(found.pieces) < len(event.texts):
                found.pieces.append([])
            for i, text in enumerate(event.texts):  # the whole ones; a cut-off one as it came
                found.pieces[i] = [text]
            found.status, found.line = event.status, event.line
            found.figures, found.held_out = event.figures, event.held_out
        else:
            return None
        return found


def render_sample(prompt: str, text: str, inline: bool = True) -> Text:
    """A prompt (dimmed) and what the model wrote after it; `inline`: newlines as NEWLINE."""
    out = Text()
    for part, style in ((prompt, PROMPT_STYLE), (text, "")):
        if not inline:
            out.append(part, style=style)
            continue
        for i, line in enumerate(part.split("\n")):
            if i:
                out.append(NEWLINE, style=NEWLINE_STYLE)
            out.append(line, style=style)
    return out


def last_lines(text: Text, width: int, height: int, console: Console) -> Text:
    """What fits `height` rows of `width` columns, wrapped here (the view does not wrap again):
    the end of `text` if it overflows, where the newest of a streaming sample is."""
    if width < 1 or height < 1:
        return text
    lines = text.wrap(console, width, overflow="fold")
    for line in lines:
        line.rstrip()  # a space kept at the end of a row would wrap on its own
    return Text("\n").join(lines[-height:])


class SampleView(Static):
    """One sample of one eval: the newest as it streams, or one the keys stepped to."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self.reset()

    def reset(self, expected: int | None = None) -> None:
        """Forget every sample (a new run). `expected`: how many the run draws per eval, if
        known (0: none)."""
        self.book = SampleBook()
        self.expected = expected
        self.pinned: int | None = None  # the iteration stepped back to (None: the newest)
        self.picked: int | None = None  # the sample chosen (None: the one being drawn)
        self.dirty = True

    # -- recording (cheap: called per event) -----------------------------------------------------
    def record(self, event: Event) -> EvalSamples | None:
        """Fold in a sample event (None for any other); drawn at the next `redraw()`."""
        found = self.book.record(event)
        if found is not None:
            if self.pinned is not None and self.pinned not in self.book.evals:
                self.pinned = None  # what it showed is gone (a resume drew it again)
            # stepped back, the view stays put: only its title's hint of newer ones changes
            self.dirty = True
        return found

    # -- the keys ------------------------------------------------------------------------------
    def shown(self) -> tuple[EvalSamples, int] | None:
        """The eval and the sample index on show; None before any."""
        if not self.book.order:
            return None
        found = self.book.evals[self.pinned] if self.pinned is not None else self.book.newest()
        assert found is not None
        index = found.current if self.picked is None else self.picked
        return found, min(index, max(found.count - 1, 0))

    def step(self, by: int) -> bool:
        """Show an older (-1) or newer (+1) eval's samples, the same sample of them; the newest
        follows the live run again. False if there is none that way."""
        shown = self.shown()
        if shown is None:
            return False
        found, index = shown
        at = self.book.order.index(found.iteration) + by
        if not 0 <= at < len(self.book.order):
            return False
        if at == len(self.book.order) - 1:
            self.pinned, self.picked = None, None
        else:
            self.pinned, self.picked = self.book.order[at], index
        self.dirty = True
        return True

    def next_sample(self) -> bool:
        """Show the eval's next sample (after the last: the first)."""
        shown = self.shown()
        if shown is None or shown[0].count < 2:
            return False
        found, index = shown
        self.picked = (index + 1) % found.count
        self.dirty = True
        return True

    # -- drawing (on the owner's timer) ---------------------------------------------------------
    def title(self) -> str:
        shown = self.shown()
        if shown is None:
            return "samples"
        found, index = shown
        count = max(found.count, 1)
        hint = ", s: next" if count > 1 else ""  # `s` is not in the footer
        parts = [f"samples @ iter {found.iteration:,} ({index + 1}/{count}{hint})"]
        if found.status == "drawing":
            if index >= found.current:  # else this sample is whole, a later one is drawn
                parts.append("writing…" if index == found.current else "waiting")
        elif found.status != "done":
            parts.append(found.status)
        newest = self.book.order[-1]
        if found.iteration != newest:
            at = self.book.order.index(found.iteration) + 1
            parts.append(f"eval {at}/{len(self.book)}, newest @ {newest:,}: ] to follow")
        return " · ".join(parts)

    def body(self) -> Text:
        shown = self.shown()
        if shown is None:
            if self.expected == 0:
                return Text("this run draws no samples (--eval-samples 0)", style="dim")
            return Text(
                "after each eval, a few short samples from the weights of the moment, "
                "as they are written", style="dim"
            )  # fmt: skip
        found, index = shown
        text = render_sample(found.prompt(index), found.text(index))
        if found.status == "failed" and found.line:
            text = Text(found.line, style="red")
        return text

    def redraw(self) -> None:
        self.border_title = self.title()
        width, height = self.size
        self.update(last_lines(self.body(), width, height, self.app.console))
        self.dirty = False
