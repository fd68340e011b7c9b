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

from lal_core import sampling
from lal_core.errors import LalError
from lal_core.flags import number, positive_int

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"lal: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from lal_core.backends import BACKENDS
    from lal_core.flags import add_run_flags

    parser = _Parser(prog="lal", description="Train, watch and talk to a small GPT.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model, with early stopping and checkpoints")
    add_run_flags(t)
    t.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="continue a stopped or interrupted run from its last saved state "
        "(with its own settings; only --max-iters and --device may change)",
    )

    s = sub.add_parser("sample", help="stream text from a checkpoint")
    s.add_argument(
        "run",
        nargs="?",
        default=None,
        help="run id, run folder or .safetensors file (default: the newest run)",
    )
    s.add_argument("--checkpoint", default="best", choices=["best", "final", "sft"])
    s.add_argument("--prompt", default=sampling.DEFAULT_PROMPT, help="default: %(default)s")
    s.add_argument("--tokens", type=positive_int, default=sampling.DEFAULT_TOKENS)
    s.add_argument("--temperature", type=number, default=sampling.DEFAULT_TEMPERATURE)
    s.add_argument("--top-k", type=int, default=sampling.DEFAULT_TOP_K)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--backend", default="torch", choices=list(BACKENDS))
    s.add_argument("--device", default=None)
    s.add_argument("--no-cache", action="store_true", help="recompute the context every token")
    _add_int8_head_switch(s)
    s.add_argument("--runs-dir", default=None)

    r = sub.add_parser("runs", help="list past runs")
    r.add_argument("--runs-dir", default=None)
    _add_sft_parsers(sub, BACKENDS)
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
                    f"{event.tokens_per_sec:,.0f} tok/s"
                    f"{f' | {event.mfu:.0%} MFU' if event.mfu is not None else ''} \x1b[K"
                )
                sys.stderr.flush()
            return
        if self.live:
            sys.stderr.write("\r\x1b[K")
        if isinstance(event, ev.Preparing):
            print(event.line, flush=True)
        elif isinstance(event, ev.RunStarted):
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
    from lal_core.events import StopRequest
    from lal_core.flags import fixed_by_resume, run_request
    from lal_core.trainer import Trainer

    stop = StopRequest()
    if args.resume:
        given = fixed_by_resume(args)
        if given:
            raise LalError(
                f"--resume continues a run with its own settings; drop {', '.join(given)}"
            )
        trainer = Trainer.resume(
            args.resume, args.runs_dir, args.max_iters, args.device, on_event=_Printer(), stop=stop
        )
    else:
        request = run_request(args)
        trainer = Trainer(
            request.model_config,
            request.train_config,
            on_event=_Printer(),
            stop=stop,
            **request.trainer_options(),
        )
    with _StopOnSignals(stop):
        result = trainer.run_training()
    if result.status == "failed":
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
def _add_int8_head_switch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-int8-head",
        action="store_true",
        help="keep the output head in bfloat16 (torch, on a CPU without native bf16, samples "
        "with an int8 head by default)",
    )


def _sampling_options(args: argparse.Namespace) -> dict:
    return {"int8_head": False} if args.no_int8_head else {}


def cmd_sample(args: argparse.Namespace) -> int:
    from lal_core.runs import resolve_checkpoint
    from lal_core.sampling import check_sampling_args, load_for_sampling, stream
    from lal_core.tokenizer import encode

    check_sampling_args(args.temperature, args.top_k, args.tokens)
    if args.prompt == "":
        raise LalError("the prompt is empty; give at least one character with --prompt")
    path = resolve_checkpoint(args.run, args.checkpoint, args.runs_dir)
    backend = load_for_sampling(path, args.backend, args.device, **_sampling_options(args))
    n_prompt = len(encode(args.prompt))
    if n_prompt > backend.cfg.block_size:
        raise LalError(
            f"the prompt is {n_prompt} tokens, longer than this model's context of "
            f"{backend.cfg.block_size}; shorten it"
        )
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
        if r.damaged:
            blank = "{:<34} {:<7} {:<8} {:>8} {:>6} {:>6}".format(r.run_id, *"??----")
            print(f"{blank}  damaged: {r.error}")
            continue
        best = f"{r.best_val:.4f}" if r.best_val is not None else "-"
        at = str(r.best_iter) if r.best_iter is not None else "-"
        print(
            f"{r.run_id:<34} {r.config:<7} {r.backend:<8} {best:>8} {at:>6} {r.iteration:>6}  "
            f"{r.status}"
        )
    return 0


# -- sft and chat --------------------------------------------------------------------------
def _add_sft_parsers(sub, backends) -> None:
    f = sub.add_parser("sft", help="fine-tune a run's best checkpoint into a small chat model")
    f.add_argument("run", nargs="?", default=None, help="run id or folder (default: the newest)")
    f.add_argument("--epochs", type=positive_int, default=5)
    f.add_argument("--pairs", default=None, help='JSON lines {"question": ..., "answer": ...}')
    f.add_argument(
        "--repeat",
        type=positive_int,
        default=None,
        help="copies of each pair (default: 5, 1 for --pairs)",
    )
    f.add_argument("--lr", type=number, default=None, help="constant learning rate (default: 3e-4)")
    f.add_argument("--batch-size", type=positive_int, default=None, help="default: 4")
    f.add_argument("--seed", type=int, default=None, help="shuffling and the comparison's sampling")
    f.add_argument("--backend", default="torch", choices=list(backends))
    f.add_argument("--device", default=None)
    f.add_argument("--tokens", type=positive_int, default=60, help="per answer in the comparison")
    f.add_argument("--runs-dir", default=None)

    c = sub.add_parser("chat", help="ask the fine-tuned model a question")
    c.add_argument("run", nargs="?", default=None, help="run id, folder or .safetensors file")
    c.add_argument("question")
    c.add_argument("--base", action="store_true", help="answer with the base (best) checkpoint")
    c.add_argument("--tokens", type=positive_int, default=100)
    c.add_argument("--temperature", type=number, default=sampling.DEFAULT_TEMPERATURE)
    c.add_argument("--top-k", type=int, default=sampling.DEFAULT_TOP_K)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--backend", default="torch", choices=list(backends))
    c.add_argument("--device", default=None)
    c.add_argument("--runs-dir", default=None)
    _add_int8_head_switch(c)


class _SFTPrinter(_Printer):
    def __call__(self, event) -> None:
        from lal_core.events import SFTEpochDone

        if isinstance(event, SFTEpochDone):
            if self.live:
                sys.stderr.write("\r\x1b[K")
            print(event.line, flush=True)
        else:
            super().__call__(event)


def cmd_sft(args: argparse.Namespace) -> int:
    import warnings

    from lal_core import sft
    from lal_core.events import StopRequest
    from lal_core.sampling import load_for_sampling

    stop = StopRequest()
    seed = sft.DEFAULT_SEED if args.seed is None else args.seed
    with warnings.catch_warnings(record=True) as caught, _StopOnSignals(stop):
        warnings.simplefilter("always", sft.SFTWarning)
        result = sft.run_sft(
            args.run,
            pairs=args.pairs,
            repeat=args.repeat,
            epochs=args.epochs,
            batch_size=args.batch_size or sft.DEFAULT_BATCH_SIZE,
            lr=sft.DEFAULT_LR if args.lr is None else args.lr,
            seed=seed,
            backend=args.backend,
            device=args.device,
            runs_root=args.runs_dir,
            on_event=_SFTPrinter(),
            stop=stop,
        )
    for w in caught:
        print(f"lal: warning: {w.message}", file=sys.stderr)
    if result.status == "failed":
        print(f"lal: error: {result.message}", file=sys.stderr)
        return EXIT_ERROR
    if result.status == "stopped":
        print(f"stopped ({stop.reason}); the partly fine-tuned weights are in {result.checkpoint}")
        return EXIT_INTERRUPTED
    assert result.checkpoint is not None and result.backend is not None
    base = load_for_sampling(
        result.checkpoint.with_name("best.safetensors"), args.backend, args.device
    )
    trained = [
        p.question for p in (sft.load_pairs(args.pairs) if args.pairs else sft.builtin_pairs())
    ]
    rows = sft.compare(
        base, result.backend, trained_questions=trained, max_new_tokens=args.tokens, seed=seed
    )
    print()
    print(sft.format_comparison(rows), end="", flush=True)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lal_core.errors import CheckpointError
    from lal_core.runs import find_run
    from lal_core.sampling import check_sampling_args, load_for_sampling
    from lal_core.sft import stream_answer

    check_sampling_args(args.temperature, args.top_k, args.tokens)
    if args.run and Path(args.run).is_file():
        path = Path(args.run)
    else:
        run = find_run(args.run, args.runs_dir)
        path = run.checkpoint("best" if args.base else "sft")
        if not path.is_file() and args.base:
            raise CheckpointError(f"run {run.run_id} has no best checkpoint ({path.name})")
        if not path.is_file():
            raise CheckpointError(
                f"run {run.run_id} has no fine-tuned checkpoint yet; "
                f"run first: lal sft {run.run_id}"
            )
    backend = load_for_sampling(path, args.backend, args.device, **_sampling_options(args))
    out = sys.stdout
    pieces = stream_answer(
        backend,
        args.question,
        max_new_tokens=args.tokens,
        temperature=args.temperature,
        top_k=args.top_k,
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


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "runs": cmd_runs,
    "sft": cmd_sft,
    "chat": cmd_chat,
}


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
    except OSError as exc:  # the environment: a full disk, a folder without permission, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"lal: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
