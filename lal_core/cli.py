"""The headless command line: `lal train`, `lal sample`, and (in `cli_runs`, `cli_sft`,
`cli_export`, `cli_quality`, `cli_data`) `lal runs`, `lal watch`, `lal stop`, `lal sft`, `lal chat`,
`lal export`, `lal plot`, `lal eval`, `lal report`, `lal prepare`.

Every user error ends as one line on stderr (`lal: error: ...`) and a non-zero exit status:
2 for bad flags, 1 for anything else. Ctrl-C (or SIGTERM / SIGHUP, or `lal stop`) during
training finishes the step in progress, saves the final checkpoint and exits 130; a second
Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lal_core import cli_data, cli_export, cli_quality, cli_runs, cli_sft, sampling
from lal_core.console import EXIT_ERROR, EXIT_INTERRUPTED, OneLineParser, Printer, StopOnSignals
from lal_core.distributed import RankLost
from lal_core.errors import LalError
from lal_core.flags import add_checkpoint_flags, add_sampling_flags, controls_from, positive_int
from lal_core.launch import LAUNCHED


def build_parser() -> argparse.ArgumentParser:
    from lal_core.backends import BACKENDS
    from lal_core.flags import add_run_flags

    parser = OneLineParser(prog="lal", description="Train, watch and talk to a small GPT.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    t = sub.add_parser("train", help="train a model, with early stopping and checkpoints")
    add_run_flags(t)
    t.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="continue a stopped or interrupted run from its last saved state "
        "(with its own settings; only --max-iters, --micro-batch, --nproc and --device may "
        "change)",
    )
    t.add_argument(
        "--nproc",
        type=positive_int,
        default=None,
        metavar="N",
        help="train on N ranks here, data parallel (torch: torchrun's standalone mode; mlx: "
        "mlx.launch): each computes batch / N sequences of every step",
    )
    t.add_argument(
        "--run-id",
        default=None,
        help="name the new run's folder (default: date, config and backend); the dashboard "
        "names it first to send the run's console output there",
    )

    s = sub.add_parser("sample", help="stream text from a checkpoint")
    add_checkpoint_flags(s)
    s.add_argument("--prompt", default=sampling.DEFAULT_PROMPT, help="default: %(default)s")
    s.add_argument(
        "--num-samples",
        type=positive_int,
        default=1,
        help="samples of the prompt, drawn together (sample i uses seed + i); one streams as it "
        "is drawn, more print as they end",
    )
    add_sampling_flags(s, sampling.DEFAULT_TOKENS)
    s.add_argument("--backend", default="torch", choices=list(BACKENDS))
    s.add_argument("--device", default=None)
    s.add_argument("--no-cache", action="store_true", help="recompute the context every token")
    cli_sft.add_int8_head_switch(s)

    cli_runs.add_parsers(sub)
    cli_sft.add_parsers(sub, BACKENDS)
    cli_export.add_parsers(sub)
    cli_quality.add_parsers(sub, BACKENDS)
    cli_data.add_parsers(sub)
    return parser


# -- train ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from lal_core import distributed
    from lal_core.events import StopRequest
    from lal_core.flags import fixed_by_resume, run_request
    from lal_core.trainer import Trainer

    if args.resume:
        given = fixed_by_resume(args)
        if given:
            raise LalError(
                f"--resume continues a run with its own settings; drop {', '.join(given)}"
            )
    else:
        request = run_request(args)  # checked before any rank starts
    if args.nproc and args.nproc > 1 and not distributed.under_a_launcher():
        from lal_core.launch import launch_ranks
        from lal_core.runs import find_run

        runs_root = Path(args.runs_dir) if args.runs_dir else None
        if args.resume:
            record = find_run(args.resume, runs_root).read()
            backend, config = record.backend, record.model_config.name
        else:  # what the ranks would each refuse, said once
            request.train_config.micro_per_rank(args.nproc)
            backend, config = request.backend, request.model_config.name
        return launch_ranks(
            args.argv, args.nproc, backend, args.run_id, args.resume, runs_root, config
        )
    ranks = distributed.join(args.device)  # one process, or this rank under torchrun
    say = Printer() if ranks.main else None  # rank 0 speaks for the run
    stop = StopRequest()
    told = {"on_event": say, "stop": stop, "ranks": ranks}
    try:
        if args.resume:
            where = (args.resume, args.runs_dir, args.max_iters, args.device)
            trainer = Trainer.resume(*where, micro_batch=args.micro_batch, **told)
        else:
            configs = (request.model_config, request.train_config)
            trainer = Trainer(*configs, run_id=args.run_id, **told, **request.trainer_options())
        with StopOnSignals(stop):
            result = trainer.run_training()
    finally:
        distributed.leave(ranks)
    if not ranks.main:
        return EXIT_INTERRUPTED if result.status == "stopped" else 0
    if result.status == "failed":
        print(f"lal: error: {result.message}", file=sys.stderr)
        return EXIT_ERROR
    if result.status == "stopped":
        print(
            f"stopped ({stop.reason}) at iter {result.iteration}; checkpoints and metrics are "
            f"saved; resume with: lal train --resume {result.run_dir.name}",
            flush=True,
        )
        return EXIT_INTERRUPTED
    return 0


# -- sample --------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    from lal_core.runs import resolve_checkpoint
    from lal_core.sampling import Generation, load_for_sampling
    from lal_core.tokenizer import encode

    controls = controls_from(args)
    if args.prompt == "":
        raise LalError("the prompt is empty; give at least one character with --prompt")
    path = resolve_checkpoint(args.run, args.checkpoint, args.runs_dir)
    backend = load_for_sampling(path, args.backend, args.device, **cli_sft.sampling_options(args))
    n_prompt = len(encode(args.prompt))
    if n_prompt > backend.cfg.block_size:
        raise LalError(
            f"the prompt is {n_prompt} tokens, longer than this model's context of "
            f"{backend.cfg.block_size}; shorten it"
        )
    generation = Generation(
        backend,
        args.prompt,
        args.tokens,
        controls,
        args.num_samples,
        args.seed,
        use_cache=not args.no_cache,
    )
    out = sys.stdout
    if args.num_samples == 1:
        out.write(args.prompt)
        for piece in generation:
            out.write(piece.text)
            out.flush()
        out.write("\n")
        return 0
    # Interleaved rows would be unreadable: each sample prints whole, as soon as it ends.
    printed: set[int] = set()
    for piece in generation:
        if piece.row not in printed and generation.samples[piece.row].ended:
            printed.add(piece.row)
            _print_sample(out, piece.row, generation.samples[piece.row], args.prompt)
    return 0


def _print_sample(out, row: int, sample, prompt: str) -> None:
    how = {"stop": f"stopped at {sample.stop_string!r}", "time": "out of time"}.get(
        sample.ended, ""
    )
    facts = [f"seed {sample.seed}", f"{len(sample.tokens)} tokens", *filter(None, [how])]
    head = f"--- sample {row + 1} ({', '.join(facts)}) ---"
    out.write(f"{head}\n{prompt}{sample.text}\n\n")
    out.flush()


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "runs": cli_runs.cmd_runs,
    "watch": cli_runs.cmd_watch,
    "stop": cli_runs.cmd_stop,
    "sft": cli_sft.cmd_sft,
    "chat": cli_sft.cmd_chat,
    "eval": cli_quality.cmd_eval,
    "report": cli_quality.cmd_report,
    "export": cli_export.cmd_export,
    "plot": cli_export.cmd_plot,
    "prepare": cli_data.cmd_prepare,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]  # the command's own arguments (`lal train --nproc` passes them on)
    try:
        return COMMANDS[args.command](args)
    except LalError as exc:
        # Under `lal train --nproc`, rank 0 speaks for the ranks, and the launcher says which
        # rank was lost; a bare torchrun's ranks each say it.
        launched = bool(os.environ.get(LAUNCHED))
        if not (launched and (isinstance(exc, RankLost) or _other_launched_rank())):
            print(f"lal: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lal: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `lal sample | head` closed the pipe: not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # the environment: a full disk, a folder without permission, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"lal: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR


def _other_launched_rank() -> bool:
    """A rank other than 0 (torchrun's RANK, mlx.launch's MLX_RANK)."""
    return (os.environ.get("RANK") or os.environ.get("MLX_RANK") or "0") != "0"


if __name__ == "__main__":
    sys.exit(main())
