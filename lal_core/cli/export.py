"""`lal export` (a checkpoint as a Hugging Face folder or a GGUF file for llama.cpp) and
`lal plot` (loss curves as a picture and CSV): what a user takes away from lal, in the field's
formats."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from lal_core.cli.flags import add_checkpoint_flags
from lal_core.errors import LalError

GGUF_OUTTYPES = ["f32", "q8_0"]


def add_parsers(sub) -> None:
    e = sub.add_parser(
        "export", help="write a checkpoint as a Hugging Face GPT-2 folder or a GGUF file"
    )
    add_checkpoint_flags(e)
    e.add_argument(
        "--format",
        default=None,
        choices=["hf", "gguf"],
        help="hf: a Hugging Face GPT-2 folder; gguf: one file for llama.cpp "
        "(default: gguf when the output ends in .gguf, else hf)",
    )
    e.add_argument(
        "-o", "--output", required=True, metavar="PATH", help="the folder (hf) or file (gguf)"
    )
    e.add_argument(
        "--outtype",
        default=None,
        choices=GGUF_OUTTYPES,  # lal_core.export.gguf_file.OUTTYPES, without importing gguf here
        help="GGUF weights: f32 (lal's values exactly) or q8_0 (8-bit, under a third of the size) "
        "(default: f32)",
    )
    e.add_argument(
        "--force", action="store_true", help="replace an existing file or a folder in use"
    )
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
    from lal_core.runs.folder import resolve_checkpoint

    fmt = args.format or ("gguf" if args.output.lower().endswith(".gguf") else "hf")
    if fmt == "hf" and args.outtype is not None:
        raise LalError("--outtype is for --format gguf; a Hugging Face folder is float32")
    checkpoint = resolve_checkpoint(args.run, args.checkpoint, args.runs_dir)
    if fmt == "gguf":
        return _export_gguf(args, checkpoint)
    from lal_core.export import export_hf

    done = export_hf(checkpoint, Path(args.output), force=args.force)
    kind = "chat model (SFT), with its chat template" if done.chat else "model"
    print(f"exported {checkpoint} ({done.n_params:,} parameters) as a Hugging Face GPT-2 {kind}")
    print(
        f"  {done.folder}/  load it with AutoModelForCausalLM.from_pretrained({str(done.folder)!r})"
    )
    return 0


def _export_gguf(args: argparse.Namespace, checkpoint: Path) -> int:
    from lal_core.export.gguf_file import export_gguf

    done = export_gguf(checkpoint, Path(args.output), args.outtype or "f32", force=args.force)
    path = shlex.quote(str(done.path))
    # llama.cpp's llama-cli is a chat; plain continuation of a prompt is llama-completion
    run = f"llama-cli -m {path}" if done.chat else f"llama-completion -m {path} -no-cnv -p ROMEO:"
    kind = "chat model (SFT), with its chat template" if done.chat else "model"
    print(
        f"wrote {done.path} ({done.size / 1e6:.1f} MB, {done.outtype}): {checkpoint} "
        f"({done.n_params:,} parameters) as a GGUF {kind}; run it with llama.cpp: {run}"
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
    from lal_core.runs.folder import find_runs

    runs = find_runs(args.runs, args.runs_dir)
    output = args.output
    if output is None and args.csv is None:
        output = default_picture(runs[0])
    if output is not None:
        picture_format(Path(output))  # a wrong suffix is an error before anything is read
    curves = read_curves(runs)
    if output is not None:
        print(f"wrote {save_picture(curves, Path(output))}")
    if args.csv is not None:
        rows = sum(len(c.evals) for c in curves)
        print(f"wrote {save_csv(curves, Path(args.csv))} ({rows} evals)")
    return 0
