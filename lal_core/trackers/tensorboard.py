"""A run's log as TensorBoard event files, written with TensorBoard's own writer and summaries
(no TensorFlow, no torch: `tensorboard` alone).

One folder per job, `RUN/tracking/tensorboard/train` (and `.../sft`), so `tensorboard --logdir
checkpoints/` shows every run beside the others. Scalars under train/, eval/, writing/,
held_out/ and sft/; the config as hyperparameters (the HParams tab) and as text; each eval's
samples as a text table; the best and early-stop iterations and the end as text. A run sent
again replaces its event files: they held the same history, which comes again whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.summary.writer.event_file_writer import EventFileWriter

FLUSH_SECONDS = 5  # a live run's points reach TensorBoard within this


class TensorBoardTracker:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = EventFileWriter(str(folder), flush_secs=FLUSH_SECONDS)
        self.ended: dict[str, Any] = {}
        self.step, self.wall_time = 0, 0.0  # the latest event's: where the end goes

    def _add(self, summary: Any, step: int, wall_time: float) -> None:
        self.step, self.wall_time = step, wall_time
        self.writer.add_event(event_pb2.Event(summary=summary, step=step, wall_time=wall_time))

    def start(self, config: dict[str, Any], wall_time: float) -> None:
        hparams = hparams_pb(_flat(config), trial_id=config["run_id"], start_time_secs=wall_time)
        self._add(hparams, 0, wall_time)
        text = "```json\n" + json.dumps(config, indent=1) + "\n```"
        self._add(text_pb("config", text), 0, wall_time)

    def scalars(self, step: int, values: dict[str, float], wall_time: float) -> None:
        for tag, value in values.items():
            self._add(scalar_pb(tag, value), step, wall_time)

    def samples(self, step: int, rows: list[tuple[str, str]], wall_time: float) -> None:
        table = "| prompt | sample |\n|---|---|\n" + "".join(
            f"| {_cell(prompt)} | {_cell(text)} |\n" for prompt, text in rows
        )
        self._add(text_pb("samples", table), step, wall_time)
        self.writer.flush()  # an eval's figures and samples: show them now

    def summary(self, values: dict[str, Any]) -> None:
        self.ended.update(values)

    def finish(self, status: str) -> str:
        lines = "".join(f"- {k}: {v}\n" for k, v in self.ended.items())
        step, wall_time = self.step, self.wall_time
        self._add(text_pb("run", lines), step, wall_time)
        for key in ("best_iter", "early_stop_iter"):
            if isinstance(self.ended.get(key), int):
                self._add(scalar_pb(f"run/{key}", self.ended[key]), step, wall_time)
        self.writer.close()
        logdir = self.folder.parents[3]  # the runs' folder: every run beside the others
        return f"tensorboard: {self.folder} ({status}); see it with: tensorboard --logdir {logdir}"


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested settings as TensorBoard's hyperparameters: dotted names, plain values."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif value is not None:
            out[name] = json.dumps(value)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")
