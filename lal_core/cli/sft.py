"""`lal sft` and `lal chat`: fine-tune a run into a small chat model, and ask it."""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import replace

from lal_core.cli.console import EXIT_ERROR, EXIT_INTERRUPTED, Printer, StopOnSignals
from lal_core.cli.flags import (
    add_int8_head_switch,
    add_sampling_flags,
    controls_from,
    number,
    positive_int,
    sampling_options,
)
from lal_core.cli.track import add_report_flag
from lal_core.generation.controls import Controls

BEFORE_AFTER = ("before (best)", "after (sft)")


def add_parsers(sub) -> None:
    from lal_core.backends import BACKENDS as backends

    f = sub.add_parser("sft", help="fine-tune a run's best checkpoint into a small chat model")
    f.add_argument("run", nargs="?", default=None, help="run id or folder (default: the newest)")
    f.add_argument("--epochs", type=positive_int, default=5)
    f.add_argument("--pairs", default=None, help='JSON lines {"question": ..., "answer": ...}')
    f.add_argument(
        "--repeat", type=positive_int, help="copies of each pair (default: 5, 1 for --pairs)"
    )
    f.add_argument("--lr", type=number, default=None, help="constant learning rate (default: 3e-4)")
    f.add_argument("--batch-size", type=positive_int, default=None, help="default: 4")
    f.add_argument(
        "--micro-batch",
        type=positive_int,
        default=None,
        help="examples per forward pass, gradients accumulated (default: the whole batch)",
    )
    f.add_argument("--seed", type=int, default=None, help="shuffling and the comparison's sampling")
    f.add_argument("--backend", default="torch", choices=list(backends))
    f.add_argument("--device", default=None)
    f.add_argument("--tokens", type=positive_int, default=60, help="per answer in the comparison")
    f.add_argument(
        "--no-compare", action="store_true", help="skip the before/after answers at the end"
    )
    f.add_argument("--runs-dir", default=None)
    add_report_flag(f)
    f.set_defaults(handler=cmd_sft)

    c = sub.add_parser("chat", help="ask the fine-tuned model a question")
    c.add_argument("run", nargs="?", default=None, help="run id, folder or .safetensors file")
    c.add_argument("question")
    c.add_argument("--base", action="store_true", help="answer with the base (best) checkpoint")
    add_sampling_flags(c, 100, "answer")
    c.add_argument("--backend", default="torch", choices=list(backends))
    c.add_argument("--device", default=None)
    c.add_argument("--runs-dir", default=None)
    add_int8_head_switch(c)
    c.set_defaults(handler=cmd_chat)


def cmd_sft(args: argparse.Namespace) -> int:
    import warnings

    from lal_core import sft
    from lal_core.runs.events import StopRequest, chain
    from lal_core.trackers.send import LiveTrackers, check_installed

    check_installed(args.report_to)
    trackers = LiveTrackers(args.report_to, "sft")

    stop = StopRequest()
    seed = sft.DEFAULT_SEED if args.seed is None else args.seed
    printer = Printer()
    with warnings.catch_warnings(record=True) as caught, StopOnSignals(stop), printer:
        warnings.simplefilter("always", sft.SFTWarning)
        result = sft.run_sft(
            args.run,
            pairs=args.pairs,
            repeat=args.repeat,
            epochs=args.epochs,
            batch_size=args.batch_size or sft.DEFAULT_BATCH_SIZE,
            micro_batch=args.micro_batch or 0,
            lr=sft.DEFAULT_LR if args.lr is None else args.lr,
            seed=seed,
            backend=args.backend,
            device=args.device,
            runs_root=args.runs_dir,
            on_event=chain(printer, trackers),
            stop=stop,
        )
    for w in caught:
        print(f"lal: warning: {w.message}", file=sys.stderr)
    for line in trackers.report():
        print(line, flush=True)
    if result.status == "failed":
        print(f"lal: error: {result.message}", file=sys.stderr)
        return EXIT_ERROR
    if result.status == "stopped":
        print(f"stopped ({stop.reason}); the partly fine-tuned weights are in {result.checkpoint}")
        return EXIT_INTERRUPTED
    assert result.checkpoint is not None
    if args.no_compare:
        return 0
    print()
    return compare_before_after(result.checkpoint, args, seed, stop)


def compare_before_after(checkpoint, args: argparse.Namespace, seed: int, stop) -> int:
    """The report's chat mode, best against sft: one answer per question, side by side, and
    the figures; saved as the run's report."""
    from lal_core.errors import LalError
    from lal_core.quality import report as rp
    from lal_core.quality import report_file
    from lal_core.quality.report_file import save_report
    from lal_core.runs.folder import RunDir

    run = RunDir(checkpoint.parent)
    columns = rp.plan_columns([str(run.path)], ["best", "sft"], [args.backend], [""], Controls())
    columns = [replace(c, label=label) for c, label in zip(columns, BEFORE_AFTER, strict=True)]
    try:
        corpus = rp.report_corpus(columns)
    except LalError:  # a run folder without its corpus: answers and their own figures only
        corpus = None
    with StopOnSignals(stop):
        report = rp.make_report(
            columns, corpus, chat=True, samples=1, tokens=args.tokens, seed=seed, stop=stop
        )
    if report is None:
        return EXIT_INTERRUPTED
    print(report_file.format_samples(report), end="\n\n")
    print(report_file.format_report(report), end="", flush=True)
    with contextlib.suppress(LalError):
        save_report(report, run)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from lal_core.generation.sampling import load_for_sampling
    from lal_core.runs.folder import resolve_checkpoint
    from lal_core.sft import stream_answer

    controls = controls_from(args)
    path = resolve_checkpoint(args.run, "best" if args.base else "sft", args.runs_dir)
    backend = load_for_sampling(path, args.backend, args.device, **sampling_options(args))
    out = sys.stdout
    pieces = stream_answer(
        backend,
        args.question,
        max_new_tokens=args.tokens,
        controls=controls,
        seed=args.seed,
    )
    started = False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0
