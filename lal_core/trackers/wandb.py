"""A run's log as a Weights & Biases run.

A job of a lal run is a W&B run named after it ("RUN", or "RUN sft" for its fine-tuning), in
the group RUN, with the config as W&B's config. Scalars as in TensorBoard (train/, eval/,
writing/, held_out/, sft/), each eval's samples as a table, the best and early-stop iterations
and the end in the summary. The project is $WANDB_PROJECT, else "lal".

Where no W&B account is set up here (no $WANDB_API_KEY, no api.wandb.ai entry in ~/.netrc) and
$WANDB_MODE does not say otherwise, the run is written offline in the run folder, and
`wandb sync` sends it later from a machine with a network. W&B's own settings and environment
variables ($WANDB_MODE, $WANDB_ENTITY, $WANDB_BASE_URL, ...) hold as usual.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import wandb


def wandb_mode() -> str:
    """$WANDB_MODE, else online with an account set up here, offline without."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        known = netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        known = False
    return "online" if known else "offline"


class WandbTracker:
    def __init__(self, folder: Path, run_id: str, job: str) -> None:
        self.folder, self.run_id, self.job = folder, run_id, job
        self.mode = wandb_mode()
        self.run: Any = None

    def start(self, config: dict[str, Any], wall_time: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "lal"),
            name=self.run_id if self.job == "train" else f"{self.run_id} {self.job}",
            group=self.run_id,
            job_type=self.job,
            config=config,
            dir=self.folder,
            mode=self.mode,
            # The run's process is elsewhere: nothing here to capture, time or describe.
            settings=wandb.Settings(
                console="off", x_disable_stats=True, x_disable_machine_info=True, save_code=False
            ),
        )

    def scalars(self, step: int, values: dict[str, float], wall_time: float) -> None:
        self.run.log(values, step=step)

    def samples(self, step: int, rows: list[tuple[str, str]], wall_time: float) -> None:
        table = wandb.Table(columns=["prompt", "sample"], data=[list(r) for r in rows])
        self.run.log({"samples": table}, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def finish(self, status: str) -> str:
        folder = Path(self.run.dir).parent  # .../wandb/offline-run-...-ID
        self.run.finish(exit_code=0 if status in ("completed", "early_stopped") else 1)
        if self.mode == "offline":
            return f"wandb: offline run {folder} ({status}); send it with: wandb sync {folder}"
        return f"wandb: {self.run.url or self.run.name} ({status})"
