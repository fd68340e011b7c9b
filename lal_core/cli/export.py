"""`lal export` (a checkpoint as a Hugging Face folder) and `lal plot` (loss curves as a picture
and CSV): what a user takes away from lal, in the field's formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from lal_core.cli.flags import add_checkpoint_flags
from lal_core.errors import LalError


def add_parsers(sub) -> None:
    e = sub.add_parser("export", help="write a checkpoint as a Hugging Face GPT-2 folder")
    add_checkpoint_flags(e)
    e.add_argument("--format", default="hf", choices=["hf"], help="default: %(default)s")
    e.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write")
    e.add_argument("--force", action="store_true", help="replace a folder that is not empty")
    e.set_defaults(handler=cmd_export)

    p = sub.add_parser("plot", help="draw runs' loss curves (PNG or SVG) and/or write them as CSV")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids or folders (default: newest)")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="the picture, .png or .svg (default: curves.png in the first run's folder, "
        "unless only --csv is given)",
    )
    p.add_argument("--csv", default=None, metavar="FILE", help="one row per eval of every run")
    p.add_argument("--runs-dir", default=None)
    p.set_defaults(handler=cmd_plot)


def cmd_export(args: argparse.Namespace) -> int:
    from lal_core.export import export_hf
    from lal_core.runs.folder import resolve_checkpoint

    checkpoint = resolve_checkpoint(args.run, args.checkpoint, args.runs_dir)
    done = export_hf(checkpoint, Path(args.output), force=args.force)
    kind = "chat model (SFT), with its chat template" if done.chat else "model"
    print(f"exported {checkpoint} ({done.n_params:,} parameters) as a Hugging Face GPT-2 {kind}")
    print(
        f"  {done.folder}/  load it with AutoModelForCausalLM.from_pretrained({str(done.folder)!r})"
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from lal_core.export.plot import (
        default_picture,
        picture_format,
        read_curves,
        save_csv,
        save_picture,
    )
    from lal_core.runs.folder import find_run

    runs = [find_run(ref, args.runs_dir) for ref in args.runs or [None]]
    output = args.output
    if output is None and args.csv is None:
        output = default_picture(runs[0])
    if output is not None:
        picture_format(Path(output))  # a wrong suffix is an error before anything is read
    if len({run.path.resolve() for run in runs}) < len(runs):
        raise LalError("a run is named twice; name each run once")
    curves = read_curves(runs)
    if output is not None:
        print(f"wrote {save_picture(curves, Path(output))}")
    if args.csv is not None:
        rows = sum(len(c.evals) for c in curves)
        print(f"wrote {save_csv(curves, Path(args.csv))} ({rows} evals)")
    return 0
