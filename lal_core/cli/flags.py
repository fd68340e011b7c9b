"""The command line's flags, each defined once: those that start a training run (shared by
`lal train` and `lal-tui`), those that pick a checkpoint and those that shape sampling.

A run's flags are TrainConfig's fields (`RECIPE_FLAGS` says what each is, for `--help` and the
dashboard's Setup pane); with them go the model's dropout, where the run happens (config,
backend, device, corpus, runs folder) and the backend's switches (dtype, compile, recompute, the
MFU peak). `add_run_flags` puts them on a parser; `run_request` turns parsed flags into a
checked `RunRequest`, or a one-line LalError; `request_argv` is the way back.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lal_core.backends import BACKENDS
from lal_core.errors import ConfigError, LalError
from lal_core.model.config import CONFIG_DROPOUT, MODEL_CONFIGS, get_model_config
from lal_core.model.recipe import (
    CONFIG_RECIPES,
    EVAL_EVERY_SEQUENCES,
    TrainConfig,
    default_recipe,
)

if TYPE_CHECKING:  # its import loads the corpus and data modules: only for a run's commands
    from lal_core.training.request import RunRequest

DEFAULT_CONFIG = "tiny"
DEFAULT_BACKEND = "torch"
# What `lal train --resume RUN` may change; every other run flag is the run's own.
RESUME_MAY_CHANGE = ("max_iters", "micro_batch", "device", "runs_dir", "nproc")


def _integer(text: str, least: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{rule}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, "must be at least 1")


def seed_number(text: str) -> int:
    return _integer(text, 0, "the seed must be 0 or more")


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_checkpoint_flags(parser: argparse.ArgumentParser) -> None:
    """RUN, --checkpoint and --runs-dir: which checkpoint a command reads (`lal sample`,
    `lal export`, `lal eval`)."""
    parser.add_argument(
        "run",
        nargs="?",
        default=None,
        help="run id, run folder or .safetensors file (default: the newest run)",
    )
    parser.add_argument("--checkpoint", default="best", choices=["best", "final", "sft"])
    parser.add_argument("--runs-dir", default=None)


def add_sampling_flags(
    parser: argparse.ArgumentParser, tokens: int | str, what: str = "sample"
) -> None:
    """How samples are drawn (`lal sample`, `lal chat`, `lal report`): the `Controls`, the
    tokens per sample and the seed. `controls_from` reads them back."""
    from lal_core.generation import controls as c

    g = parser.add_argument_group("sampling")
    g.add_argument(
        "--tokens",
        type=positive_int,
        default=tokens if isinstance(tokens, int) else None,
        help=f"per {what} (default: {tokens})",
    )
    g.add_argument(
        "--temperature",
        type=number,
        default=c.DEFAULT_TEMPERATURE,
        help="0: greedy (default: %(default)s)",
    )
    g.add_argument("--top-k", type=int, default=c.DEFAULT_TOP_K, help="default: %(default)s")
    g.add_argument("--top-p", type=number, default=1.0, help="nucleus sampling; 1: off (default)")
    g.add_argument(
        "--repetition-penalty",
        type=number,
        default=1.0,
        help="lower the odds of tokens already in the context (HF's rule); 1: off (default)",
    )
    g.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help=f"end the {what} where this text would begin, not shown (repeatable)",
    )
    g.add_argument(
        "--max-time",
        type=number,
        default=None,
        metavar="SECONDS",
        help="a time limit for the whole generation",
    )
    g.add_argument(
        "--seed", type=seed_number, default=None, help="draws the same again (default: random)"
    )


def add_int8_head_switch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-int8-head",
        action="store_true",
        help="keep the output head in bfloat16 (torch on a CPU samples with an int8 head by "
        "default)",
    )


def sampling_options(args: argparse.Namespace) -> dict:
    return {"int8_head": False} if args.no_int8_head else {}


def controls_from(args: argparse.Namespace):
    """The checked `Controls` of `add_sampling_flags`' flags."""
    from lal_core.generation.controls import Controls

    return Controls(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop),
        max_time=args.max_time,
    ).check()


_MICRO = (
    "sequences per forward pass, gradients accumulated over batch / micro passes; "
    "0: the whole batch"
)
_EVAL_EVERY = (
    f"steps between evals; 0: every {EVAL_EVERY_SEQUENCES:,} sequences trained "
    f"({EVAL_EVERY_SEQUENCES // 16} steps at batch 16, the recipe's)"
)
# What each recipe field is, for `lal train --help` and the dashboard's Setup pane.
RECIPE_FLAGS = {
    "batch_size": ("batch size", "sequences per optimizer step"),
    "micro_batch": ("micro batch", _MICRO),
    "max_iters": ("max iterations", "optimizer steps at most"),
    "lr": ("learning rate", "peak learning rate"),
    "min_lr": ("min lr", "learning rate the cosine decays to"),
    "warmup_iters": ("warmup", "steps of linear warmup"),
    "weight_decay": ("weight decay", "AdamW weight decay on matrices"),
    "beta1": ("beta1", "AdamW beta1"),
    "beta2": ("beta2", "AdamW beta2"),
    "grad_clip": ("grad clip", "global gradient-norm clip"),
    "eval_interval": ("eval interval", _EVAL_EVERY),
    "eval_tokens": (
        "eval tokens",
        "val tokens an eval scores at most: a larger val split is scored on windows spread "
        "evenly over it, the same ones every eval; 0: all of it",
    ),
    "patience": ("patience (evals)", "evals without a new best before early stop"),
    "eval_samples": (
        "eval samples",
        "samples drawn after each eval from the weights then, the same prompts and seeds every "
        "time, to watch the model learn to write; 0: none",
    ),
    "eval_sample_tokens": ("eval sample tokens", "tokens per eval sample, at most"),
    "eval_temperature": (
        "eval temperature",
        "the eval samples' temperature (top-k 50); 0: greedy",
    ),
    "seed": ("seed", "random seed (weights, batches, dropout)"),
    "ema": (
        "ema decay",
        "keep a moving average of the weights with this decay per step, evaluated beside "
        "them: the best checkpoint is whichever scores lower; 0: none",
    ),
    "label_smoothing": (
        "label smoothing",
        "share of each training target spread evenly over the vocabulary (evals score "
        "without it); 0: none",
    ),
}


@dataclass(frozen=True)
class RecipeFlag:
    """A field of the recipe as a flag: `--batch-size` is TrainConfig.batch_size."""

    name: str
    label: str  # what the Setup pane calls it
    kind: type  # int or float
    default: int | float
    help: str

    def parse(self, text: str) -> int | float:
        """The field's value typed into the Setup pane; a one-line LalError if it is not one."""
        text = text.strip()
        try:
            return self.kind(text)
        except ValueError:
            what = "an integer" if self.kind is int else "a number"
            raise LalError(f"{self.label} must be {what}, got {text!r}") from None


def recipe_flags() -> list[RecipeFlag]:
    """TrainConfig's fields, each a flag: name, label, type, default and help."""
    return [
        RecipeFlag(
            f.name,
            RECIPE_FLAGS[f.name][0],
            float if f.type in ("float", float) else int,
            f.default,
            RECIPE_FLAGS[f.name][1],
        )
        for f in fields(TrainConfig)
    ]


def _own_defaults(field: str) -> str:
    """`; small: 1500` for a recipe field a named config sets itself (CONFIG_RECIPES)."""
    own = [
        f"{name}: {values[field]:g}" for name, values in CONFIG_RECIPES.items() if field in values
    ]
    return "".join(f"; {text}" for text in own)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag that shapes a training run. All default to None: unset means the recipe's
    (or the device's measured) default, and a resume can tell what was given."""
    parser.add_argument(
        "--config", default=None, choices=list(MODEL_CONFIGS), help=f"default: {DEFAULT_CONFIG}"
    )
    parser.add_argument(
        "--backend", default=None, choices=list(BACKENDS), help=f"default: {DEFAULT_BACKEND}"
    )
    parser.add_argument(
        "--device", default=None, help="torch: cuda, mps or cpu; mlx: gpu or cpu (default: best)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="a UTF-8 text file (default: $LAL_DATA, then "
        "data/tinyshakespeare/input.txt, downloaded if missing)",
    )
    parser.add_argument(
        "--runs-dir", default=None, help="where run folders go (default: checkpoints/)"
    )
    recipe = parser.add_argument_group("training recipe")
    for f in recipe_flags():
        recipe.add_argument(
            flag_name(f.name),
            dest=f.name,
            type=number if f.kind is float else int,
            default=None,
            help=f"{f.help} (default: {f.default:g}{_own_defaults(f.name)})",
        )
    dropouts = "; ".join(f"{name} {rate:g}" for name, rate in CONFIG_DROPOUT.items())
    recipe.add_argument(
        "--dropout",
        type=number,
        default=None,
        help=f"dropout (default: {dropouts}; 0: the original write-up's regime)",
    )
    recipe.add_argument(
        "--writeup",
        action="store_true",
        default=None,
        help="train with the original write-up's recipe: no dropout, and the same settings "
        "(5,000 iterations...) for every config; flags given beside it still count",
    )
    recipe.add_argument(
        "--attn-proj-dropout",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="dropout on the attention's output projection too, as nanoGPT (default: off, "
        "as the write-up)",
    )
    _add_backend_flags(parser.add_argument_group("fast paths"))


def _add_backend_flags(group) -> None:
    group.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="training compute type under autocast; weights stay float32 "
        "(default: the fastest measured for the device)",
    )
    group.add_argument(
        "--no-compile", action="store_true", help="train eagerly, without torch.compile"
    )
    group.add_argument(
        "--recompute",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute each block's activations in backward: a third more compute, far less "
        "memory (default: on where they would pass 4 GiB, off on CUDA)",
    )
    group.add_argument(
        "--peak-tflops",
        type=number,
        default=None,
        help="the device's peak TFLOP/s for the MFU figure (default: per device)",
    )


def request_argv(request: RunRequest) -> list[str]:
    """`lal train` flags that ask for exactly this run (the dashboard starts its runs so)."""
    cfg, base = request.model_config, get_model_config(request.model_config.name)
    if replace(cfg, dropout=base.dropout, attn_proj_dropout=base.attn_proj_dropout) != base:
        raise ConfigError(f"the model config {cfg.name!r} is not one `lal train` knows")
    argv = ["--config", cfg.name, "--backend", request.backend]
    if cfg.dropout != base.dropout:
        argv += ["--dropout", repr(cfg.dropout)]
    if cfg.attn_proj_dropout != base.attn_proj_dropout:
        argv += ["--attn-proj-dropout" if cfg.attn_proj_dropout else "--no-attn-proj-dropout"]
    defaults = default_recipe(cfg.name)
    for f in recipe_flags():
        value = getattr(request.train_config, f.name)
        if value != getattr(defaults, f.name):
            argv += [flag_name(f.name), repr(value)]
    options = request.backend_options
    if options.get("dtype"):
        argv += ["--dtype", options["dtype"]]
    if options.get("compile") is False:
        argv.append("--no-compile")
    if options.get("recompute") is not None:
        argv.append("--recompute" if options["recompute"] else "--no-recompute")
    for flag, value in (
        ("--device", request.device),
        ("--data", request.data),
        ("--runs-dir", request.runs_dir),
        ("--peak-tflops", request.peak_tflops),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The backend switches given on the command line (unset ones left out)."""
    options = {
        "dtype": args.dtype,
        "compile": False if args.no_compile else None,
        "recompute": args.recompute,
    }
    return {k: v for k, v in options.items() if v is not None}


def run_request(args: argparse.Namespace, base: TrainConfig | None = None) -> RunRequest:
    """The run the parsed flags ask for: `base` (default: the config's recipe, or with
    --writeup the write-up's) with the flags given."""
    from lal_core.training.request import RunRequest

    config, writeup = args.config or DEFAULT_CONFIG, bool(getattr(args, "writeup", None))
    base = base or (TrainConfig() if writeup else default_recipe(config))
    given = {f.name: getattr(args, f.name) for f in recipe_flags()}
    train_cfg = replace(base, **{k: v for k, v in given.items() if v is not None})
    options = backend_options(args)
    given_model = {"dropout": args.dropout, "attn_proj_dropout": args.attn_proj_dropout}
    overrides = {key: value for key, value in given_model.items() if value is not None}
    if writeup:
        overrides = {"dropout": 0.0, "attn_proj_dropout": False, **overrides}
    return RunRequest(
        model_config=get_model_config(config, **overrides),
        train_config=train_cfg.validate(),
        backend=args.backend or DEFAULT_BACKEND,
        device=args.device,
        data=args.data,
        runs_dir=Path(args.runs_dir) if args.runs_dir else None,
        backend_options=options,
        peak_tflops=args.peak_tflops,
    )


def fixed_by_resume(args: argparse.Namespace) -> list[str]:
    """The flags given that a resumed run cannot take (it keeps its own settings)."""
    names = ["config", "backend", "data", "dropout", "attn_proj_dropout", "writeup", "dtype"]
    names += ["recompute", "peak_tflops"]
    names += [f.name for f in recipe_flags()]
    given = [
        flag_name(n) for n in names if n not in RESUME_MAY_CHANGE and getattr(args, n) is not None
    ]
    if args.no_compile:
        given.append("--no-compile")
    return given
