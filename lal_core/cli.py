"""The headless command line: `lal train`, `lal sample`, `lal runs`.

Every user error ends as one line on stderr (`lal: error: ...`) and a non-zero exit status:
2 for bad flags, 1 for anything else. Ctrl-C (or SIGTERM / SIGHUP) during training finishes the
step in progress, saves the final checkpoint and exits 130; a second Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from lal_core.errors import LalError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"lal: error: {message} (see: {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def build_parser() -> argparse.ArgumentParser:
    from lal_core.backends import BACKENDS
    from lal_core.config import MODEL_CONFIGS

    parser = _Parser(prog="lal", description="Train, watch and talk to a small GPT.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model, with early stopping and checkpoints")
    t.add_argument("--config", default="tiny", choices=list(MODEL_CONFIGS))
    t.add_argument("--backend", default="torch", choices=list(BACKENDS))
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best present)")
    t.add_argument("--max-iters", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=_float, default=None)
    t.add_argument("--warmup-iters", type=int, default=None)
    t.add_argument("--eval-interval", type=int, default=None)
    t.add_argument("--patience", type=int, default=None)
    t.add_argument("--dropout", type=_float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument(
        "--data",
        default=None,
        help="a UTF-8 text file (default: $LAL_DATA, then "
        "data/tinyshakespeare/input.txt, downloaded if missing)",
    )
    t.add_argument("--runs-dir", default=None, help="where run folders go (default: checkpoints/)")

    s = sub.add_parser("sample", help="stream text from a checkpoint")
    s.add_argument(
        "run",
        nargs="?",
        default=None,
        help="run id, run folder or .safetensors file (default: the newest run)",
    )
    s.add_argument("--checkpoint", default="best", choices=["best", "final", "sft"])
    s.add_argument("--prompt", default="\n")
    s.add_argument("--tokens", type=_positive_int, default=200)
    s.add_argument("--temperature", type=_float, default=0.8)
    s.add_argument("--top-k", type=int, default=50)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--backend", default="torch", choices=list(BACKENDS))
    s.add_argument("--device", default=None)
    s.add_argument("--no-cache", action="store_true", help="recompute the context every token")
    s.add_argument("--runs-dir", default=None)

    r = sub.add_parser("runs", help="list past runs")
    r.add_argument("--runs-dir", default=None)
    return parser


# -- train ---------------------------------------------------------------------------------
class _Printer:
    """Prints the run's events: the header, one line per eval, and how it ended."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()

    def __call__(self, event) -> None:
        from lal_core import events as ev

        if isinstance(event, ev.StepDone):
            if self.live:
                sys.stderr.write(
                    f"\riter {event.iteration} | loss {event.loss:.4f} | "
                    f"{event.tokens_per_sec:,.0f} tok/s \x1b[K"
                )
                sys.stderr.flush()
            return
        if self.live:
            sys.stderr.write("\r\x1b[K")
        if isinstance(event, ev.RunStarted):
            print(event.header, flush=True)
        elif isinstance(event, (ev.EvalDone, ev.EarlyStopped, ev.RunFinished)):
            print(event.line, flush=True)


class _StopOnSignals:
    """First SIGINT/SIGTERM/SIGHUP: ask the run to stop after this step. Second: exit at once."""

    def __init__(self, stop) -> None:
        self.stop = stop
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set():
            sys.stderr.write("\nlal: stopping now\n")
            os._exit(EXIT_INTERRUPTED)
        name = signal.Signals(signum).name
        self.stop.set(name)
        sys.stderr.write(f"\nlal: {name}: stopping after this step (again to quit at once)\n")

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lal_core.config import TrainConfig, get_model_config
    from lal_core.events import StopRequest
    from lal_core.trainer import Trainer

    overrides = {"dropout": args.dropout} if args.dropout is not None else {}
    model_cfg = get_model_config(args.config, **overrides)
    flags = {
        k: getattr(args, k)
        for k in (
            "max_iters",
            "batch_size",
            "lr",
            "warmup_iters",
            "eval_interval",
            "patience",
            "seed",
        )
    }
    train_cfg = replace(TrainConfig(), **{k: v for k, v in flags.items() if v is not None})
    train_cfg.validate()
    stop = StopRequest()
    trainer = Trainer(
        model_cfg,
        train_cfg,
        backend=args.backend,
        device=args.device,
        data=args.data,
        runs_root=args.runs_dir,
        on_event=_Printer(),
        stop=stop,
    )
    with _StopOnSignals(stop):
        result = trainer.run_training()
    if result.status == "failed":
        return EXIT_ERROR
    if result.status == "stopped":
        print(f"stopped ({stop.reason}); checkpoints and metrics saved in {result.run_dir}")
        return EXIT_INTERRUPTED
    return 0


# -- sample --------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    from lal_core.runs import resolve_checkpoint
    from lal_core.sampling import check_sampling_args, load_for_sampling, stream

    check_sampling_args(args.temperature, args.top_k, args.tokens)
    path = resolve_checkpoint(args.run, args.checkpoint, args.runs_dir)
    backend = load_for_sampling(path, args.backend, args.device)
    out = sys.stdout
    out.write(args.prompt)
    for piece in stream(
        backend,
        args.prompt,
        args.tokens,
        args.temperature,
        args.top_k,
        args.seed,
        use_cache=not args.no_cache,
    ):
        out.write(piece.text)
        out.flush()
    out.write("\n")
    return 0


# -- runs ----------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    from lal_core.runs import list_runs

    runs = list_runs(args.runs_dir)
    if not runs:
        print("no runs yet; start one with: lal train --config tiny")
        return 0
    heads = ("run", "config", "backend", "best val", "@iter", "iters")
    print("{:<34} {:<7} {:<8} {:>8} {:>6} {:>6}  status".format(*heads))
    for r in runs:
        best = f"{r.best_val:.4f}" if r.best_val is not None else "-"
        at = str(r.best_iter) if r.best_iter is not None else "-"
        print(
            f"{r.run_id:<34} {r.config:<7} {r.backend:<8} {best:>8} {at:>6} {r.iteration:>6}  "
            f"{r.status}"
        )
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "runs": cmd_runs}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LalError as exc:
        print(f"lal: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lal: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `lal sample | head` closed the pipe: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
