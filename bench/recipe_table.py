"""Recipe candidates side by side, from their run folders: the table README's recipe gives.

    uv run python bench/recipe_table.py RUN [RUN ...] [--runs-dir DIR]

RUN is a run id (under --runs-dir) or a run folder. Per run, one row of a Markdown table:
- what differs from the write-up's recipe (the model's dropout and its placement, the
  recipe's fields, the seed): stable while lal's own defaults move;
- the best val loss in nats per token and in bits per byte ("avg" where the weights' moving
  average scored it), and its iteration;
- where the run ended (status, iteration), its wall time to the best and to its last eval;
- from its report.json (`lal report RUN`), if it has one: the first column's repeated 4-grams,
  loops, memorised 8-grams and invented words, each with its standard error, and held-out
  text's beside them.

It reads the folders through lal's records and imports no framework, so it runs beside
training. Compare rows of one seed with care: the issue asks for two seeds where a gap is
under 0.02.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from lal_core.errors import ConfigError
from lal_core.model.config import get_model_config
from lal_core.model.recipe import TrainConfig
from lal_core.quality.report_file import read_report
from lal_core.runs.folder import RunDir, find_runs
from lal_core.runs.records import Figures


def changes(run: RunDir) -> str:
    """The run's settings that differ from the write-up's recipe: its named config without
    dropout, TrainConfig's defaults."""
    record = run.read()
    cfg, parts = record.model_config, []
    try:
        base = get_model_config(cfg.name, dropout=0.0, attn_proj_dropout=False)
    except ConfigError:  # a hand-made config: all of it is a change
        base = None
    for key in ("dropout", "attn_proj_dropout"):
        if base is None or getattr(cfg, key) != getattr(base, key):
            parts.append(f"{key} {getattr(cfg, key)}")
    defaults, recipe = TrainConfig(), record.train_config or TrainConfig()
    for f in fields(TrainConfig):
        if f.name.startswith("eval_") or f.name == "patience":
            continue  # how it is watched, not how it learns
        if getattr(recipe, f.name) != getattr(defaults, f.name):
            parts.append(f"{f.name} {getattr(recipe, f.name):g}")
    return ", ".join(parts) or "the write-up's"


def _with_error(figures: Figures, key: str) -> str:
    value, error = getattr(figures, key), getattr(figures, f"{key}_se", None)
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ± {error:.3f}" if error is not None else "")


def report_cells(run: RunDir) -> list[str]:
    """The report's first column and held-out text: repeated 4-grams, loops, memorised 8-grams,
    invented words."""
    report = read_report(run)
    if report is None or not report.columns:
        return ["-"] * 4
    mine, held = report.columns[0].figures, report.baseline
    cells = []
    for key in ("repeated_4", "looping", "memorised_8", "invented_words"):
        if key == "looping":
            cell = f"{mine.looping}/{mine.samples}"
            theirs = f"{held.looping}/{held.samples}" if held else "-"
        else:
            cell, theirs = _with_error(mine, key), _with_error(held, key) if held else "-"
        cells.append(f"{cell} ({theirs})")
    return cells


def row(run: RunDir) -> str:
    record = run.read()
    evals = run.evals()
    best = next((e for e in evals if e.iteration == record.best_iter), None)
    bpb = f"{record.best_bpb:.3f}" if record.best_bpb is not None else "-"
    val = f"{record.best_val:.4f}" if record.best_val is not None else "-"
    if best is not None and best.ema_val_loss is not None and best.ema_val_loss < best.val_loss:
        val += " (avg)"
    to_best = f"{best.elapsed / 60:.0f}" if best else "-"
    total = f"{evals[-1].elapsed / 60:.0f}" if evals else "-"
    cells = [
        run.run_id,
        record.model_config.name,
        changes(run),
        val,
        bpb,
        str(record.best_iter if record.best_iter is not None else "-"),
        f"{record.status} at {record.iteration}",
        f"{to_best} / {total}",
        *report_cells(run),
    ]
    return "| " + " | ".join(cells) + " |"


HEAD = (
    "| run | config | changes | best val (nats) | bits per byte | at iter | ended | minutes to "
    "best / to the last eval | repeated 4-grams (held-out) | loops (held-out) | memorised 8-grams "
    "(held-out) | invented words (held-out) |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run ids or run folders")
    parser.add_argument("--runs-dir", type=Path, default=None)
    args = parser.parse_args()
    print(HEAD)
    for run in find_runs(args.runs, args.runs_dir):
        print(row(run))


if __name__ == "__main__":
    main()
