"""Fitting lines and tables into the terminal's width (80 columns and up).

A line has several forms, fullest first: `FittingLine` shows the first that fits its width and
chooses again when it is resized. A table's columns (`Column`) may have a short label and a
rank in which they are dropped: `fit_columns` keeps every column while they fit, then shortens
the labels, then drops columns in their order, and, when even the fewest are too wide, narrows
one column (its cells end in "…") so that the rest still shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

MIN_SQUEEZED = 12  # a narrowed column keeps at least this many cells (a run id's date, say)


def first_fitting(width: int, forms: Sequence[str]) -> str:
    """The first of `forms` no wider than `width` cells, else the last (the shortest); the
    first when nothing is laid out yet (`width` 0)."""
    if not forms:
        return ""
    if width <= 0:
        return forms[0]
    return next((f for f in forms if cell_len(f) <= width), forms[-1])


def ellipsized(text: str, width: int) -> str:
    """`text`, or as much of it as fits `width` cells with "…" at the end."""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, max(width - 1, 0)) + "…"


class FittingLine(Widget):
    """One line of text: the fullest of its forms that fits the line's width."""

    DEFAULT_CSS = "FittingLine { height: 1; }"

    forms: reactive[tuple[str, ...]] = reactive(tuple)

    def __init__(self, *forms: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self.set_reactive(FittingLine.forms, forms)

    def show(self, *forms: str) -> None:
        """Show these forms (fullest first) from now on."""
        self.forms = forms

    def render(self) -> Content:
        # called again at each resize: the form is chosen for the width of the moment
        return Content(first_fitting(self.content_size.width, self.forms))


@dataclass(frozen=True)
class Column:
    """A table column: its key, its label, a shorter label for narrow tables, and when it is
    dropped (1 first, then 2, ...; 0: never)."""

    key: str
    label: str
    short: str | None = None
    drop: int = 0

    def shown_label(self, short: bool) -> str:
        return self.short if short and self.short is not None else self.label


@dataclass(frozen=True)
class Fitted:
    """The columns a table shows at its width, with short labels or not, and each column's
    width in cells (without its padding)."""

    columns: tuple[Column, ...]
    short: bool
    widths: tuple[int, ...]


Rows = Sequence[Mapping[str, str]]


def content_width(column: Column, rows: Rows, short: bool) -> int:
    cells = (cell_len(row.get(column.key, "")) for row in rows)
    return max(cell_len(column.shown_label(short)), *cells, 0)


def layout(columns: Sequence[Column], rows: Rows, short: bool) -> Fitted:
    """These columns, each as wide as its widest cell or label."""
    widths = tuple(content_width(c, rows, short) for c in columns)
    return Fitted(tuple(columns), short, widths)


def fit_columns(
    columns: Sequence[Column], rows: Rows, room: int, squeeze: str, padding: int = 1
) -> Fitted:
    """The fullest layout of `columns` whose cells (`rows`: column key to text), padded both
    sides as a DataTable pads them, fit `room` cells; past the last column that may be dropped,
    the `squeeze` column is narrowed to what is left (at least `MIN_SQUEEZED`). Every column
    while nothing is laid out (`room` 0)."""
    if room <= 0:
        return layout(columns, rows, False)
    ranks = sorted({c.drop for c in columns if c.drop})
    for dropped in [0, *ranks]:
        kept = [c for c in columns if not (c.drop and c.drop <= dropped)]
        for short in (False, True) if dropped == 0 else (True,):
            fitted = layout(kept, rows, short)
            if sum(fitted.widths) + 2 * padding * len(kept) <= room:
                return fitted
    widths = dict(zip((c.key for c in kept), fitted.widths, strict=True))
    others = sum(w for key, w in widths.items() if key != squeeze)
    widths[squeeze] = max(room - others - 2 * padding * len(kept), MIN_SQUEEZED)
    return Fitted(fitted.columns, True, tuple(widths.values()))
