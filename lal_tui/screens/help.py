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
| `t` | start a training run with the Setup pane's settings (a process of its own) |
| `x` | stop what runs in this pane (a run stops after its step and saves, as with `lal stop`) |
| `?` | this help |
| `ctrl+p` | command palette (themes, start/stop, panes) |
| `tab` / `shift+tab` | move between fields |
| `q`, `ctrl+q` | quit (while a run goes on, asks: stop it first, or leave it running) |

| pane | keys |
| --- | --- |
| Setup | `↑`/`↓` choose a config; fields are checked as you type |
| Train | `m` smoothing of the step loss, `l` log scale, `w` plot the loss / the writing figures |
| | `[` / `]` an older / newer eval's samples (`]` to the newest follows the run again), |
| | `s` the eval's next sample |
| Sample | `g` or `enter` generate (samples > 1: drawn together, with figures), `x` stop, |
| | `v` view: plain / token boundaries / probability |
| SFT | `f` fine-tune the chosen base run (its answers at each epoch's end stream below its |
| | loss), `a` or `enter` ask your question, `e` next example |
| Runs | `enter` open (a live run: follow), `space` mark, `c` overlay, `s` save a picture, |
| | `e` report on the run (again: cancel), `d` delete, `u` resume, `r` refresh |

After each eval a run draws a few short samples from its weights of the moment, the same
prompts and seeds every time: the Train pane streams them as they are written, and `w` plots
their writing figures (distinct 2-grams, repeated 4-grams, samples in a loop, memorised 8-grams)
against those of the held-out text after the same prompts (dashed).

A run started here is a process of its own writing an ordinary run folder (its console output
in the folder's train.log): quitting, closing the terminal or losing the SSH link leaves it
running, and `lal runs`, `lal watch`, `lal stop` and `lal sample` see it. Follow a live run
from any dashboard with `lal-tui --attach [RUN]` or `enter` in Runs; two dashboards can follow
one run. A run on another host can be followed, and stopped only there.

Press `escape` or `?` to close.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
