"""The key footer, rebuilt only when the keys it shows change.

Textual's Footer rebuilds all its keys (new widgets, each with its styles and caches) every time
anything asks for the bindings to be refreshed: a focus change, a pane switch, a job that ends.
One pane switch rebuilt it four times, some 9,000 objects in reference cycles that only the
garbage collector frees, on the event loop that also draws the frame the key is waiting for.
`KeyFooter` rebuilds at most once per refresh, and only when the keys differ from those shown.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer

Shown = tuple[tuple[str, str, str, bool, str], ...]


class KeyFooter(Footer):
    """Textual's Footer, rebuilt only when the keys it shows change."""

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

    def shown_keys(self) -> Shown:
        """What the footer would show now: key, label, action, enabled, tooltip."""
        return tuple(
            (binding.key, binding.description, binding.action, enabled, tooltip or "")
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show
        )

    async def _rebuild_if_changed(self) -> None:
        self._pending = False
        shown = self.shown_keys()
        if shown != self._shown:
            self._shown = shown
            self.rebuilds += 1
            await self.recompose()
