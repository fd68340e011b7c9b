"""`lal sample`: stream text from a checkpoint, or draw several samples of a prompt at once."""

from __future__ import annotations

import argparse
import sys

from lal_core.cli.flags import (
    add_checkpoint_flags,
    add_int8_head_switch,
    add_sampling_flags,
    controls_from,
    positive_int,
    sampling_options,
)
from lal_core.errors import LalError
from lal_core.generation.controls import DEFAULT_PROMPT, DEFAULT_TOKENS


def add_parsers(sub) -> None:
    from lal_core.backends import BACKENDS

    s = sub.add_parser("sample", help="stream text from a checkpoint")
    add_checkpoint_flags(s)
    s.add_argument("--prompt", default=DEFAULT_PROMPT, help="default: %(default)s")
    s.add_argument(
        "--num-samples",
        type=positive_int,
        default=1,
        help="samples of the prompt, drawn together (sample i uses seed + i); one streams as it "
        "is drawn, more print as they end",
    )
    add_sampling_flags(s, DEFAULT_TOKENS)
    s.add_argument("--backend", default="torch", choices=list(BACKENDS))
    s.add_argument("--device", default=None)
    s.add_argument("--no-cache", action="store_true", help="recompute the context every token")
    add_int8_head_switch(s)
    s.set_defaults(handler=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from lal_core.data.tokenizer import encode
    from lal_core.generation.sampling import Generation, load_for_sampling
    from lal_core.runs.folder import resolve_checkpoint

    controls = controls_from(args)
    if args.prompt == "":
        raise LalError("the prompt is empty; give at least one character with --prompt")
    path = resolve_checkpoint(args.run, args.checkpoint, args.runs_dir)
    backend = load_for_sampling(path, args.backend, args.device, **sampling_options(args))
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
