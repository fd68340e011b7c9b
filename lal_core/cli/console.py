"""What the command line prints while a run goes, how it stops on a signal, and how a bad
flag is said (`OneLineParser`, for `lal` and `lal-tui`).

`Printer` prints a run's events as `lal train`, `lal sft` and `lal watch` show them: the
header, one line per eval (or SFT epoch), how it ended; on a terminal a progress line under
them (`lal_core.cli.progress`); after an eval its samples as they are drawn, indented, then
their writing figures.
`StopOnSignals` turns Ctrl-C, `kill` and a closed terminal into a stop request: the run ends
after its step with everything saved; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from lal_core.cli.progress import ProgressLine, terminal
from lal_core.runs import events as ev
from lal_core.runs.follow import describe

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line (`lal: error: ... (see: lal train --help)`) and exit status 2,
    instead of argparse's usage block."""

    def error(self, message: str):
        name = self.prog.split()[0]
        self.exit(EXIT_USAGE, f"{name}: error: {message} (see: {self.prog} --help)\n")


class Printer:
    """Prints a run's events; on a terminal, a live progress line under them (`ProgressLine`).
    A failure is left to the command (one `lal: error:` line) unless `failures` (`lal watch`,
    which only reads). Without a terminal, only the lines: what a log always received."""

    def __init__(self, failures: bool = False, samples: bool = True) -> None:
        stream = terminal()
        self.progress = ProgressLine(stream) if stream is not None else None
        self.failures = failures
        self.samples = samples  # print the samples drawn after each eval
        self.printed = 0
        self._sample: int | None = None  # the sample being printed, if one is
        self._prompts: tuple[str, ...] = ()
        self._what = "samples"  # fine-tuning's are answers

    def __call__(self, event: ev.Event) -> None:
        progress = self.progress
        if isinstance(event, (ev.SamplesStarted, ev.SampleText, ev.SamplesDone)):
            if self.samples:
                if progress is not None:
                    progress.close()  # the samples stream on the terminal, a piece at a time
                self._print_samples(event)
            return
        if isinstance(event, ev.RunStarted):
            self._what = "answers" if event.kind == "sft" else "samples"
            if progress is not None:
                progress.started(event)
        if isinstance(event, ev.StepDone):
            if progress is not None:
                progress.step(event)
            return
        if isinstance(event, (ev.EvalDone, ev.SFTEpochDone)) and progress is not None:
            progress.evaluated()
        if isinstance(event, (ev.RunFinished, ev.RunFailed)) and progress is not None:
            progress.close()  # the last lines, the command's own included, come under it
        line = describe(event)
        if line is None or (isinstance(event, ev.RunFailed) and not self.failures):
            return
        if progress is not None and progress.on_stdout:
            progress.print(line)  # above the progress line, which stays under it
        else:
            print(line, flush=True)
        self.printed += 1

    def __enter__(self) -> Printer:
        return self

    def __exit__(self, *exc: object) -> None:
        """Take the progress line away, whatever ended the run: the terminal's cursor back."""
        if self.progress is not None:
            self.progress.close()

    def _print_samples(self, event: ev.SamplesStarted | ev.SampleText | ev.SamplesDone) -> None:
        """Each sample streamed as it is drawn, its prompt first, every line indented."""
        out = sys.stdout
        if isinstance(event, ev.SamplesStarted):
            self._sample, self._prompts = None, event.prompts
            out.write(f"  {self._what} at iter {event.iteration} ({event.controls}):\n")
        elif isinstance(event, ev.SampleText):
            if event.index != self._sample:
                if self._sample is not None:
                    out.write("\n")
                self._sample = event.index
                prompt = self._prompts[event.index] if event.index < len(self._prompts) else ""
                out.write(f"  {event.index + 1}> " + _indented(prompt))
            out.write(_indented(event.text))
        else:
            if self._sample is not None:
                out.write("\n")
            self._sample = None
            if event.status == "failed":
                out.write(f"  {event.line}\n")
            elif event.status == "stopped":
                out.write(f"  ({self._what} cut short by the stop)\n")
            elif event.figures is not None:
                out.write(f"  writing: {event.figures.describe(event.held_out)}\n")
        out.flush()


def _indented(text: str) -> str:
    return text.replace("\n", "\n     ")


class StopOnSignals:
    """First SIGINT/SIGTERM/SIGHUP: ask the run to stop after this step. Second: exit at once.

    Only the main thread can take signals: elsewhere (a run started from a thread) it does
    nothing, and the run stops through its StopRequest or stop file."""

    def __init__(self, stop: ev.StopRequest) -> None:
        self.stop = stop
        self.previous: dict = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set():
            sys.stderr.write("\nlal: stopping now\n")
            os._exit(EXIT_INTERRUPTED)
        name = signal.Signals(signum).name
        self.stop.set(name)
        sys.stderr.write(f"\nlal: {name}: stopping after this step (again to quit at once)\n")

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
