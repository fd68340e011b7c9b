"""How many threads sampling takes on a CPU: torch's own count when the cores are free, else
as many as the cores no other work is running on (at least one).

A generated token is a chain of small ops. Two sets of intra-op threads on the same cores wait
on each other's time slices at every op, so contended, two threads collapse (to a fraction of
one thread's rate: bench/README.md); idle, they share the work.
Other work is noticed two ways: training in this process (the dashboard samples while it
trains; `TRAINING`), checked at every step, and other threads already running when a
generation starts (`free_cores`). Work that starts on the cores mid-generation is not seen.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import torch


class TrainingActivity:
    """Whether this process is training with torch now: a step or an eval running, or one
    ended under `grace` seconds ago (the trainer's work between steps)."""

    def __init__(self, grace: float = 2.0) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._running = 0
        self._ended = float("-inf")

    @contextlib.contextmanager
    def working(self):
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                self._ended = time.monotonic()

    def busy(self) -> bool:
        with self._lock:
            return self._running > 0 or time.monotonic() - self._ended < self.grace


TRAINING = TrainingActivity()


def runnable_threads(loadavg: str) -> int | None:
    """The threads running or ready to run now, from /proc/loadavg's text
    (`0.52 0.58 0.59 3/467 12345`: the fourth field's first number), or None."""
    try:
        return int(loadavg.split()[3].split("/")[0])
    except (IndexError, ValueError):
        return None


def own_runnable_threads() -> int:
    """This process's threads running or ready to run now (Linux), the reader included: torch's
    own pool may still be spinning after the last op, and that is not other work."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]  # the field after "(name)"
        except (OSError, IndexError):
            continue
        count += state == "R"
    return count


def free_cores(samples: int = 3, gap: float = 0.001) -> int | None:
    """The cores this process may use that no other thread is running on now (Linux; None
    where that cannot be read). The runnable count is a snapshot: the median of a few, `gap`
    seconds apart (how often one snapshot is right: bench/README.md)."""
    others = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                total = runnable_threads(f.read())
            if total is not None:
                others.append(max(0, total - own_runnable_threads()))
        except OSError:
            return None
        if i < samples - 1:
            time.sleep(gap)
    if not others:
        return None
    median = sorted(others)[len(others) // 2]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, (cores or 1) - median)


def sampling_threads() -> int:
    """Intra-op threads for the generation about to start (0: torch's setting): no more than
    the cores nobody else is running on, and at least one."""
    free = free_cores()
    if free is None or free >= torch.get_num_threads():
        return 0
    return max(1, free)


@contextlib.contextmanager
def intra_op_threads(n: int):
    """Run with n intra-op threads (0: as set). Setting the count costs under a microsecond;
    it is process-wide, so a training run in the same process shares it meanwhile."""
    before = torch.get_num_threads()
    if n <= 0 or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
