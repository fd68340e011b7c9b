"""The progress line of `lal train` on a terminal, and nothing of it in a log or a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

from conftest import run_cli
from lal_core.cli.progress import Pace, clock
from lal_core.runs import events as ev

TRAIN = ["--max-iters", "6", "--eval-interval", "3", "--batch-size", "2", "--no-compile"]
TRAIN += ["--eval-samples", "1", "--eval-sample-tokens", "8"]
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(*args: str, columns: int = 100) -> tuple[int, str]:
    """`lal ARGS` with stdout and stderr on a pseudo-terminal `columns` wide: exit status and
    everything the terminal received."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lal_core.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    received = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child end closed: Linux says EIO
            break
        if not chunk:
            break
        received += chunk
    os.close(main)
    return proc.wait(timeout=60), received.decode()


@pytest.mark.slow
def test_a_terminal_shows_the_progress_line_and_keeps_the_eval_lines(short_corpus):
    code, screen = run_in_terminal("train", "--data", str(short_corpus), *TRAIN)
    assert code == 0, screen
    # Redrawn in place: a draw after the first starts by clearing the line, "\r\x1b[2K".
    draws = [ESCAPES.sub("", d) for d in re.split(r"\r\x1b\[2K|\x1b\[\?25l", screen)[1:]]
    progress = [d for d in draws if d.startswith("iter ") and "/6" in d.split()[1]]
    done = [int(d.split()[1].split("/")[0]) for d in progress]
    assert done[0] == 1 and done == sorted(done) and done[-1] == 6  # at most every 0.1 s
    assert re.search(r"iter \d/6 .*loss \d+\.\d{4} \| [\d,]+ tok/s", "\n".join(progress))
    assert any("eval in 0:0" in d and "end in 0:" in d for d in progress)
    # The eval lines, whole, each on a line of its own: at a line's start or where the progress
    # line was cleared, to the line's end.
    for it in (0, 3, 6):
        line = rf"(\A|\n|\x1b\[2K)iter {it} +\| train [^\r\n\x1b]+ \*\r\n"
        assert re.search(line, screen), screen
    assert "finished 6 iterations" in screen
    assert screen.rfind("\x1b[?25h") > screen.rfind("\x1b[?25l")  # the cursor shown again


@pytest.mark.slow
def test_a_pipe_gets_the_lines_lal_watch_prints_and_no_progress(short_corpus, tmp_path):
    result = run_cli("train", "--data", str(short_corpus), "--runs-dir", str(tmp_path), *TRAIN)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout and "\x1b" not in result.stdout and result.stderr == ""
    # The same lines a reader of the run's folder prints, byte for byte.
    watched = run_cli("watch", result.stdout.split()[1], "--runs-dir", str(tmp_path))
    assert result.stdout == watched.stdout
    assert result.stdout.startswith("run ") and "iter 3    | train" in result.stdout


def test_the_time_left_counts_the_steps_and_the_evals_to_come():
    pace = Pace(every=10, max_steps=30)

    def step(it: int, elapsed: float) -> None:
        pace.step(ev.StepDone(iteration=it, loss=1.0, lr=1e-3, tokens_per_sec=1, elapsed=elapsed))

    step(0, 10.0)
    assert pace.left(1) is None  # one step says nothing of the pace
    step(1, 11.0)
    step(2, 12.0)
    assert pace.left(3) == (7.0, 27.0)  # 7 steps to the eval at 10, 27 to the end
    for it in range(3, 10):
        step(it, 13.0 + it - 3)
    pace.evaluated = True  # the eval at 10 took 5 s
    step(10, 19.0 + 1.0 + 5.0)  # a step of 1 s after it
    # After 11 steps: 9 to the eval at 20; 19 steps and 2 evals (20, 30) of 5 s to the end.
    assert pace.left(11) == (9.0, 19.0 + 10.0)
    assert clock(3725) == "1:02:05" and clock(65) == "1:05" and clock(7) == "0:07"
