"""A question in a modal dialog, with its answers as buttons and keys (no mouse needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


@dataclass(frozen=True)
class Choice:
    """One answer: its key, its button's words and variant, what the dialog returns for it."""

    key: str
    label: str
    value: Any
    variant: str = "default"


class ChoiceScreen(ModalScreen[Any]):
    """Asks `question`; returns the chosen answer's value, or `cancel` on escape. The last
    answer's button has the focus: make it the harmless one."""

    def __init__(self, question: str, choices: Sequence[Choice], cancel: Any = None) -> None:
        super().__init__()
        self.question, self.choices, self.cancel = question, list(choices), cancel

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(id="buttons"):
                for i, choice in enumerate(self.choices):
                    yield Button(
                        f"{choice.label} ({choice.key})", variant=choice.variant, id=f"c{i}"
                    )

    def on_mount(self) -> None:
        self.query_one(f"#c{len(self.choices) - 1}", Button).focus()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.choices[int(str(event.button.id)[1:])].value)

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape":
            event.stop()
            self.dismiss(self.cancel)
            return
        for choice in self.choices:
            if event.key == choice.key:
                event.stop()
                self.dismiss(choice.value)
                return


class ConfirmScreen(ChoiceScreen):
    """Yes (y) or no (n, escape): returns True or False."""

    def __init__(self, question: str, yes: str = "Yes", no: str = "Cancel") -> None:
        super().__init__(
            question, [Choice("y", yes, True, "error"), Choice("n", no, False, "primary")], False
        )


class QuitScreen(ChoiceScreen):
    """q while a run goes on: "stop" it then quit, "leave" it running and quit, or cancel
    (None)."""

    CHOICES = (
        Choice("s", "Stop it, then quit", "stop", "error"),
        Choice("l", "Leave it running", "leave", "warning"),
        Choice("n", "Cancel", None, "primary"),
    )

    def __init__(self) -> None:
        question = "A run is in progress. Stop it (it saves its checkpoints), or leave it running?"
        super().__init__(question, self.CHOICES)
