"""`lal eval` and `lal report`: how good a checkpoint is, as loss and perplexity on held-out
text, and as figures on its samples side by side with other checkpoints, backends or settings."""

from __future__ import annotations

import argparse

from lal_core.cli.flags import add_checkpoint_flags, add_sampling_flags, controls_from, positive_int


def add_parsers(sub) -> None:
    from lal_core.backends import BACKENDS as backends

    e = sub.add_parser("eval", help="a checkpoint's loss and perplexity on its val split or a text")
    add_checkpoint_flags(e)
    whole = "score the whole of this text instead of the run's val split"
    outside = "needed for a checkpoint outside a run folder"
    e.add_argument("--data", metavar="PATH", help=f"{whole} ({outside})")
    e.add_argument("--backend", default=None, choices=list(backends), help="default: the run's")
    e.add_argument("--device", default=None)
    e.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="windows per forward pass (default: the run's batch size, 16 outside a run)",
    )
    e.set_defaults(handler=cmd_eval)
    add_report_parser(sub, backends)


def add_report_parser(sub, backends) -> None:
    r = sub.add_parser(
        "report",
        help="a sample-quality report: checkpoints, backends or settings side by side, next to "
        "held-out text",
    )
    r.add_argument(
        "runs",
        nargs="*",
        metavar="RUN|CHECKPOINT",
        help="run ids, run folders or .safetensors files (default: the newest run)",
    )
    r.add_argument(
        "--checkpoint",
        nargs="+",
        default=["best"],
        choices=["best", "final", "sft"],
        help="which of each run's checkpoints, a column each (default: best); "
        "sft answers chat questions",
    )
    r.add_argument(
        "--backend",
        nargs="+",
        default=None,
        choices=list(backends),
        help="sample on each of these, a column each (default: each run's own)",
    )
    r.add_argument(
        "--settings",
        nargs="+",
        default=[""],
        metavar="NAME=VALUE,...",
        help="sampling changes, a column each, e.g. '' 'repetition_penalty=1.3' "
        "(names: temperature, top_k, top_p, repetition_penalty, max_time)",
    )
    r.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="a prompt (or a question in chat mode); repeatable (default: the starts of "
        "paragraphs of the val split; chat: the training questions and held-out ones)",
    )
    r.add_argument("--prompts", type=positive_int, default=5, help="prompts from the val split")
    r.add_argument(
        "--samples", type=positive_int, default=None, help="per prompt (default: 8; chat: 4)"
    )
    r.add_argument("--chat", action="store_true", help="ask chat questions (on with sft)")
    r.add_argument(
        "--data", default=None, metavar="PATH", help="the text to compare with (default: the run's)"
    )
    r.add_argument("--device", default=None)
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--show-samples", action="store_true", help="print every sample in full")
    r.add_argument("--no-save", action="store_true", help="do not write the run's report.json")
    r.add_argument("--runs-dir", default=None)
    add_sampling_flags(r, "128; chat: 60")
    r.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    import json
    import sys

    from lal_core.cli.console import EXIT_INTERRUPTED, StopOnSignals
    from lal_core.cli.progress import CountProgress
    from lal_core.quality import report as rp
    from lal_core.quality import report_file
    from lal_core.quality.report_file import save_report
    from lal_core.runs.events import StopRequest
    from lal_core.runs.folder import RunDir
    from lal_core.runs.lock import RunBusy

    controls = controls_from(args)
    columns = rp.plan_columns(
        args.runs, args.checkpoint, args.backend, args.settings, controls, args.runs_dir
    )
    corpus = rp.report_corpus(columns, args.data)
    chat = args.chat or "sft" in args.checkpoint

    stop = StopRequest()
    with StopOnSignals(stop), CountProgress() as progress:
        report = rp.make_report(
            columns,
            corpus,
            chat=chat,
            prompts=args.prompt,
            prompt_count=args.prompts,
            samples=args.samples,
            tokens=args.tokens,
            seed=rp.SEED if args.seed is None else args.seed,
            device=args.device,
            stop=stop,
            progress=progress,
        )
    if report is None:
        print(f"stopped ({stop.reason}); no report written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(report_file.format_report(report, args.show_samples), end="", flush=True)
    run = RunDir(columns[0].checkpoint.parent)
    if args.no_save:
        return 0
    if not run.run_json.is_file():
        print(
            f"lal: note: {columns[0].checkpoint} is not in a run folder; not saved", file=sys.stderr
        )
        return 0
    try:
        path = save_report(report, run)
    except RunBusy as exc:
        print(f"lal: warning: report not saved: {exc}", file=sys.stderr)
        return 0
    print(f"saved to {path}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lal_core.quality.scoring import score
    from lal_core.runs.folder import resolve_checkpoint

    checkpoint = resolve_checkpoint(args.run, args.checkpoint, args.runs_dir)
    result = score(checkpoint, args.data, args.backend, args.device, args.batch_size)
    print(result.line(), flush=True)
    return 0
