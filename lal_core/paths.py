"""Where lal keeps its data and runs: `data/` and `checkpoints/` under LAL_HOME (default: the
current directory, which is the repo root when run with `uv run` there)."""

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("LAL_HOME") or Path.cwd())


def data_dir() -> Path:
    return home() / "data"


def runs_dir() -> Path:
    return Path(os.environ.get("LAL_RUNS") or home() / "checkpoints")
