"""Before and after: the same questions answered by the base and the fine-tuned model."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from lal_core.backends import Backend
from lal_core.errors import DataError
from lal_core.runs import RunDir, find_run
from lal_core.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_K, load_for_sampling
from lal_core.sft.chat import ChatAnswer, chat
from lal_core.sft.chat_format import DEFAULT_SEED, HELD_OUT_QUESTION, builtin_pairs, load_pairs


@dataclass(frozen=True)
class Comparison:
    question: str
    trained: bool  # the question is one of the training pairs
    base: ChatAnswer
    tuned: ChatAnswer


def compare(
    base: Backend,
    tuned: Backend,
    questions: Sequence[str] | None = None,
    trained_questions: Sequence[str] | None = None,
    max_new_tokens: int = 60,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = DEFAULT_TOP_K,
    seed: int | None = DEFAULT_SEED,
) -> list[Comparison]:
    """The same questions answered by the base and the fine-tuned model, same seed for both.

    Default questions: the built-in training questions and one held-out question.
    """
    if trained_questions is None:
        trained_questions = [p.question for p in builtin_pairs()]
    if questions is None:
        questions = [*trained_questions, HELD_OUT_QUESTION]
    known = {q.strip() for q in trained_questions}
    rows = []
    for q in questions:
        options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k}
        before, after = (chat(m, q, seed=seed, **options) for m in (base, tuned))
        rows.append(Comparison(q, q.strip() in known, before, after))
    return rows


def compare_run(
    run: str | Path | RunDir | None = None,
    questions: Sequence[str] | None = None,
    backend: str = "torch",
    device: str | None = None,
    runs_root: Path | None = None,
    **kwargs: Any,
) -> list[Comparison]:
    """`compare` for a run folder: its best checkpoint against its sft checkpoint."""
    rundir = find_run(run, runs_root)
    models = []
    for kind in ("best", "sft"):
        models.append(load_for_sampling(rundir.existing_checkpoint(kind), backend, device))
    trained = kwargs.pop("trained_questions", None)
    if trained is None:
        made = rundir.read().sft
        if made is not None and made.pairs not in ("built-in", "given"):
            try:
                trained = [p.question for p in load_pairs(made.pairs)]
            except DataError:
                trained = None
    return compare(models[0], models[1], questions, trained, **kwargs)


def format_comparison(rows: Sequence[Comparison], width: int = 100) -> str:
    """Before and after side by side: a column for the base model, one for the fine-tuned."""
    col = max((width - 3) // 2, 20)

    def cell(a: ChatAnswer) -> list[str]:
        shown = a.text.replace("\n", " / ") or "(nothing)"
        shown += "  [<|end|>]" if a.ended else "  [no <|end|>]"
        return textwrap.wrap(shown, col) or [""]

    lines = [f"{'before (best.safetensors)':<{col}} | after (sft.safetensors)", "-" * (2 * col + 3)]
    for r in rows:
        tag = "in training pairs" if r.trained else "NOT in training pairs"
        lines.append(f"Q: {r.question}  ({tag})")
        for left, right in zip_longest(cell(r.base), cell(r.tuned), fillvalue=""):
            lines.append(f"{left:<{col}} | {right}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
