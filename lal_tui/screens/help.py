"""The help screen (`?`): every key, by pane."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# lal dashboard

| key | anywhere |
| --- | --- |
| `1`-`5`, `F1`-`F5` | Setup, Train, Sample, SFT, Runs |
| `t` | start training with the Setup pane's settings |
| `x` | stop what runs in this pane (training stops after the current step, checkpoints kept) |
| `?` | this help |
| `ctrl+p` | command palette (themes, start/stop, panes) |
| `tab` / `shift+tab` | move between fields |
| `q`, `ctrl+q` | quit (asks first while a run is going; the run is stopped and saved) |

| pane | keys |
| --- | --- |
| Setup | `↑`/`↓` choose a config; fields are checked as you type |
| Train | `m` smoothing of the step loss, `l` log scale |
| Sample | `g` or `enter` generate, `x` stop, `v` view: plain / token boundaries / probability |
| SFT | `f` fine-tune the chosen base run, `a` or `enter` ask your question, `e` next example |
| Runs | `enter` open, `space` mark, `c` overlay two marked, `d` delete, `u` resume, `r` refresh |

Runs started here are ordinary run folders: `lal sample` and `lal runs` see them.
Over SSH, run the dashboard inside tmux so a dropped link does not end a run:
`tmux new -s lal 'uv run lal-tui --config tiny --train'`, detach with `ctrl+b d`,
come back with `tmux attach -t lal`.

Press `escape` or `?` to close.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
