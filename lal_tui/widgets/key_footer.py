"""The key footer, rebuilt only when the keys it shows change, and fitted to the terminal's width.

Textual's Footer rebuilds all its keys (new widgets, each with its styles and caches) every time
anything asks for the bindings to be refreshed: a focus change, a pane switch, a job that ends.
One pane switch rebuilt it four times, some 9,000 objects in reference cycles that only the
garbage collector frees, on the event loop that also draws the frame the key is waiting for.
`KeyFooter` rebuilds at most once per refresh, and only when the keys differ from those shown.

Where the keys are wider than the terminal (the Runs pane's at 80 columns), the footer takes
Textual's compact style (less space around each key), then leaves out the command palette's key
on the right (ctrl+p still opens it, and the help says so), so that every key stays in view.
"""

from __future__ import annotations

from itertools import groupby

from rich.cells import cell_len
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

Shown = tuple[tuple[str, str, str, bool, str], ...]


def keys_width(bindings: list[tuple[Binding, str]], compact: bool) -> int:
    """The cells the footer's keys take up to the last one's last visible cell, as Textual's
    Footer CSS lays them out (`bindings`: each shown action's first binding and key display;
    a group of several keys shows the keys alone, then the group's description)."""
    width = trailing = 0
    for group, items in groupby(bindings, lambda item: item[0].group):
        keys = list(items)
        if group is not None and len(keys) > 1:
            shown = sum(cell_len(display) for _, display in keys)
            # a compact group: one cell before and after its keys; else each key padded; then
            # the description and its right margin (app.tcss keeps it in the compact style)
            width += shown + 2 if group.compact else shown + 2 * len(keys)
            width += cell_len(group.description) + 1
            trailing = 1
            continue
        for binding, display in keys:
            key, description = cell_len(display), cell_len(binding.description)
            if compact:  # "k Desc" and a margin
                width += key + (1 + description if description else 0) + 1
                trailing = 1
            elif description:  # " k " and "Desc "
                width += key + 2 + description + 1
                trailing = 1
            else:
                width += key
                trailing = 0
    return width - trailing


def palette_width(binding: Binding, display: str, compact: bool) -> int:
    """The command palette key's cells on the right: a border, "^p palette", a space unless
    compact."""
    return 1 + cell_len(display) + 1 + cell_len(binding.description) + (0 if compact else 1)


class KeyFooter(Footer):
    """Textual's Footer, rebuilt only when the keys it shows change, in the style that fits."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rebuilds = 0  # how many times the keys were rebuilt (tests count them)
        self._shown: Shown | None = None
        self._pending = False

    def bindings_changed(self, screen: Screen) -> None:
        # Textual's own handler, less its one rebuild per call
        self._bindings_ready = True
        if not screen.app.app_focus or self._pending:
            return
        if self.is_attached and screen is self.screen:
            self._pending = True
            self.call_after_refresh(self._rebuild_if_changed)

    def on_resize(self) -> None:
        # a narrower terminal may need the compact style or the palette key's room
        if self._bindings_ready and not self._pending:
            self._pending = True
            self.call_after_refresh(self._rebuild_if_changed)

    def shown_keys(self) -> Shown:
        """What the footer would show now: key, label, action, enabled, tooltip."""
        return tuple(
            (binding.key, binding.description, binding.action, enabled, tooltip or "")
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show
        )

    def fitting_style(self) -> tuple[bool, bool]:
        """(compact, palette key shown): the roomiest style in which every key fits."""
        width, app = self.size.width, self.app
        active = self.screen.active_bindings
        firsts: dict[str, Binding] = {}  # the footer shows an action once, with its first key
        for _, binding, _, _ in active.values():
            if binding.show:
                firsts.setdefault(binding.action, binding)
        bindings = [(b, app.get_key_display(b)) for b in firsts.values()]
        palette = active.get(app.COMMAND_PALETTE_BINDING) if app.ENABLE_COMMAND_PALETTE else None
        if width <= 0:
            return False, True  # not laid out yet
        for compact, with_palette in ((False, True), (True, True), (True, False)):
            room = width
            if with_palette and palette is not None:
                display = app.get_key_display(palette.binding)
                room -= palette_width(palette.binding, display, compact)
            if keys_width(bindings, compact) <= room:
                return compact, with_palette
        return True, False

    async def _rebuild_if_changed(self) -> None:
        self._pending = False
        shown = self.shown_keys()
        compact, palette = self.fitting_style()
        self.compact = compact  # the keys' style follows (no rebuild)
        if shown != self._shown or palette != self.show_command_palette:
            self._shown = shown
            self.show_command_palette = palette
            self.rebuilds += 1
            await self.recompose()
