"""`lal report`: samples of checkpoints side by side, with figures, next to real held-out text.

A column is what is compared: a checkpoint, the backend it samples on and the sampling controls.
Every column draws the same samples (the same prompts, samples per prompt, tokens and seeds), so
their figures differ by the model, the backend or the settings alone:

    text mode  the prompts are the first PROMPT_TOKENS tokens of paragraphs spread evenly over
               the val split (or the user's own); the baseline is held-out text from the val
               split, as many stretches of the same length as there are samples.
    chat mode  (an sft checkpoint among the columns, or `chat=True`) the prompts are questions in
               the chat format, the training pairs' and held-out ones; an answer ends at a
               marker (`sft.chat.ANSWER_STOPS`), and `closed` is the share of answers the model
               closed.

Per column: the val loss, distinct-1 and -2, repeated 4-grams, samples in a loop
(`writing.repetition`), memorised 8-grams and the longest verbatim stretch
(`writing.verbatim`), each over the BPE tokens of the samples' text (`writing.figures`). A
report is saved as its run's `report.json`, under the run's one-writer lock
(`quality.report_file`, which reads it without a framework).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lal_core.backends import Backend
from lal_core.data import corpus as data_mod
from lal_core.data.tokenizer import decode, encode
from lal_core.errors import ConfigError, LalError
from lal_core.generation.controls import Controls
from lal_core.generation.sampling import Generation
from lal_core.quality.report_file import ColumnResult, QualityReport
from lal_core.quality.scoring import (
    load_scored,
    record_of,
    run_eval_batch,
    run_val_windows,
)
from lal_core.runs.events import StopRequest
from lal_core.sft.chat import answer_controls
from lal_core.sft.chat import closed as answer_closed
from lal_core.sft.chat_format import HELD_OUT_QUESTIONS, builtin_pairs, chat_prompt, load_pairs
from lal_core.training.evals import window_loss
from lal_core.training.request import record_corpus
from lal_core.writing.figures import figures_of
from lal_core.writing.prompts import held_out_text, text_prompts
from lal_core.writing.verbatim import VerbatimIndex

PROMPTS = 5  # text mode: prompts, each the start of a val paragraph
SAMPLES = 8  # samples per prompt
TOKENS = 128  # per sample
CHAT_SAMPLES = 4  # answers per question
CHAT_TOKENS = 60
SEED = 1337


@dataclass(frozen=True)
class Column:
    """One column of a report: a checkpoint sampled on a backend with these controls."""

    checkpoint: Path
    backend: str
    controls: Controls
    label: str


def chat_questions(record: Any) -> tuple[list[str], list[bool]]:
    """The training pairs' questions (the run's own pairs where it used a file) and held-out
    ones; whether each is a training question."""
    pairs = builtin_pairs()
    made = record.sft if record is not None else None
    if made is not None and made.pairs not in ("built-in", "given"):
        # If the file moved, the built-in questions still ask what the format teaches.
        with contextlib.suppress(LalError):
            pairs = load_pairs(made.pairs)
    trained = [p.question for p in pairs]
    held_out = [q for q in HELD_OUT_QUESTIONS if q not in trained]
    return trained + held_out, [True] * len(trained) + [False] * len(held_out)


# -- the report --------------------------------------------------------------------------------
Progress = Callable[[int, int, str], None]  # (done, total, what is running)


@dataclass(frozen=True)
class Prompts:
    """What every column samples from, and the held-out text set beside its samples."""

    shown: list[str]  # as the report prints them
    ids: list[list[int]]  # as the models read them (chat: in the chat format)
    trained: list[bool]  # chat: whether each is one of the training questions
    baseline: list[list[int]] | None  # held-out text, a stretch per sample (None: no corpus)


def report_prompts(
    columns: Sequence[Column],
    val: np.ndarray | None,
    chat: bool,
    prompts: Sequence[str] | None,
    size: tuple[int, int, int],
) -> Prompts:
    """The prompts of a report: the user's, chat questions, or paragraph starts of the val
    split; `size` is (prompts from the val split, samples per prompt, tokens per sample)."""
    prompt_count, samples, tokens = size
    if prompts is not None and not prompts:
        raise ConfigError("a report needs at least one prompt")
    if prompts is not None and any(not p for p in prompts):
        raise ConfigError("a prompt is empty; give at least one character")
    trained: list[bool] = []
    if chat:
        questions, trained = chat_questions(record_of(columns[0].checkpoint))
        if prompts is not None:
            known = {q for q, t in zip(questions, trained, strict=True) if t}
            questions = list(prompts)
            trained = [q.strip() in known for q in questions]
        shown, ids = questions, [encode(chat_prompt(q)) for q in questions]
    elif prompts is not None:
        shown, ids = list(prompts), [encode(p) for p in prompts]
    elif val is None:
        raise ConfigError("without a corpus, give the prompts to sample")
    else:
        ids, baseline = text_prompts(val, prompt_count, samples, tokens)
        return Prompts([decode(p) for p in ids], ids, trained, baseline)
    baseline = held_out_text(val, len(ids) * samples, tokens) if val is not None else None
    return Prompts(shown, ids, trained, baseline)


def make_report(
    columns: Sequence[Column],
    corpus: data_mod.Corpus | None,
    chat: bool = False,
    prompts: Sequence[str] | None = None,
    prompt_count: int = PROMPTS,
    samples: int | None = None,
    tokens: int | None = None,
    seed: int = SEED,
    device: str | None = None,
    stop: StopRequest | None = None,
    progress: Progress | None = None,
) -> QualityReport | None:
    """Draw every column's samples and compute the figures; None if `stop` was set midway.

    Without a corpus (a hand-made run folder) the report has samples and the figures of the
    samples alone: no val loss, no memorisation, no held-out baseline.
    """
    if not columns:
        raise ConfigError("a report needs at least one checkpoint")
    samples = samples if samples is not None else CHAT_SAMPLES if chat else SAMPLES
    tokens = tokens if tokens is not None else CHAT_TOKENS if chat else TOKENS
    if samples < 1 or tokens < 1 or prompt_count < 1:
        raise ConfigError("a report needs at least one prompt, one sample and one token")
    val = np.asarray(corpus.val) if corpus is not None else None
    plan = report_prompts(columns, val, chat, prompts, (prompt_count, samples, tokens))
    draw = _Draw(plan, samples, tokens, seed, chat, stop, progress, len(columns) * len(plan.ids))
    index = VerbatimIndex.for_corpus(corpus) if corpus is not None else None
    results, models, val_losses = [], {}, {}
    for c in columns:
        key = (str(c.checkpoint), c.backend)
        if key not in models:
            models.clear()  # one model in memory at a time
            models[key] = load_scored(c.checkpoint, c.backend, device)
        model, record = models[key]
        if key not in val_losses and val is not None:
            draw.say(len(results), 0, f"{c.label}: val loss")
            starts = run_val_windows(val, model.cfg.block_size, record)
            val_losses[key] = window_loss(model, val, starts, run_eval_batch(model, record))
        result = draw.column(c, model, index, val_losses.get(key), len(results))
        if result is None:
            return None
        results.append(result)
    draw.say(len(columns), 0, "done")
    return QualityReport(
        mode="chat" if chat else "text",
        corpus=str(corpus.path) if corpus is not None else "",
        prompts=tuple(plan.shown),
        trained=tuple(plan.trained),
        samples=samples,
        tokens=tokens,
        seed=seed,
        columns=tuple(results),
        baseline=figures_of(plan.baseline, index) if plan.baseline is not None else None,
        baseline_texts=tuple(decode(b) for b in plan.baseline or ()),
    )


@dataclass(frozen=True)
class _Draw:
    """How a report draws each column's samples: the same prompts, sizes and seeds for all."""

    prompts: Prompts
    samples: int
    tokens: int
    seed: int
    chat: bool
    stop: StopRequest | None
    progress: Progress | None
    total: int  # prompts to draw, all columns together

    def say(self, columns_done: int, prompt: int, what: str) -> None:
        """Progress: at `prompt` of the column after `columns_done` (all done: the end)."""
        if self.progress:
            self.progress(columns_done * len(self.prompts.ids) + prompt, self.total, what)

    def column(
        self,
        c: Column,
        model: Backend,
        index: VerbatimIndex | None,
        val_loss: float | None,
        done: int,
    ) -> ColumnResult | None:
        """One column's samples of every prompt and their figures; None if stopped midway."""
        texts, drawn, closed = [], [], []
        controls = answer_controls(c.controls) if self.chat else c.controls
        for i, prompt in enumerate(self.prompts.ids):
            self.say(done, i, f"{c.label}: prompt {i + 1}")
            _check_fits(prompt, model)
            seed = self.seed + i * self.samples
            generation = Generation(
                model, prompt, self.tokens, controls, self.samples, seed, stop=self.stop
            )
            batch = generation.run()
            if self.stop is not None and self.stop.is_set():
                return None
            texts.append(tuple(s.text for s in batch))
            drawn += [encode(s.text) for s in batch]
            closed += [answer_closed(s) for s in batch]
        share = float(np.mean(closed)) if self.chat else None
        figures = figures_of(drawn, index, share, val_loss)
        described = c.controls.describe()
        return ColumnResult(c.label, str(c.checkpoint), c.backend, described, figures, tuple(texts))


def _check_fits(prompt: list[int], model: Backend) -> None:
    if len(prompt) > model.cfg.block_size:
        raise ConfigError(
            f"a prompt is {len(prompt)} tokens, longer than this model's context of "
            f"{model.cfg.block_size}; shorten it"
        )


# -- columns from a command line ---------------------------------------------------------------
def plan_columns(
    refs: Sequence[str | None],
    kinds: Sequence[str],
    backends: Sequence[str] | None,
    settings: Sequence[str],
    controls: Controls,
    runs_root: Path | None = None,
) -> list[Column]:
    """Every combination of checkpoint, backend and settings, labelled by what varies.

    refs: run ids, run folders or checkpoint files (None: the newest run); kinds: which of a
    run's checkpoints (best, final, sft); backends: None for each run's own; settings: changes
    to `controls` (`Controls.with_settings`), '' for none.
    """
    from lal_core.runs.folder import find_run

    refs = list(refs) or [None]
    checkpoints: list[tuple[Path, str, str]] = []  # (file, its name, its run's backend)
    for ref in refs:
        if ref is not None and str(ref).endswith(".safetensors"):
            path = Path(ref)
            if not path.is_file():
                raise LalError(f"checkpoint {path} not found")
            record = record_of(path)
            checkpoints.append((path, path.name, record.backend if record else "torch"))
            continue
        run = find_run(ref, runs_root)
        own = run.read().backend
        for kind in kinds:
            checkpoints.append((run.existing_checkpoint(kind), f"{run.run_id}/{kind}", own))
    variants = [(s, controls.with_settings(s) if s else controls) for s in settings or [""]]
    several_backends = backends is not None and len(backends) > 1
    columns = []
    for path, name, own in checkpoints:
        # Labelled by what varies; the checkpoints of one run by their kind alone.
        short = name if len(refs) > 1 else name.rsplit("/", 1)[-1]
        for backend in backends or [own]:
            for text, chosen in variants:
                parts = [short] if len(checkpoints) > 1 else []
                parts += [backend] if several_backends else []
                parts += [text or "as given"] if len(variants) > 1 else []
                columns.append(Column(path, backend, chosen, " ".join(parts) or name))
    return columns


def report_corpus(columns: Sequence[Column], data: str | None = None) -> data_mod.Corpus:
    """The corpus a report reads: `data`, else the one the columns' runs trained on (one for
    all: the baseline and the verbatim search need a single training split)."""
    if data is not None:
        return data_mod.load_corpus(data)
    corpora = {}
    for checkpoint in {c.checkpoint.parent: c.checkpoint for c in columns}.values():  # a run once
        record = record_of(checkpoint)
        if record is None:
            raise LalError(
                f"{checkpoint} is not in a run folder, so it has no corpus; "
                "give the text to compare with: --data PATH"
            )
        corpus = record_corpus(record)
        corpora[corpus.sha256] = corpus
    if len(corpora) > 1:
        raise LalError("these runs trained on different texts; give one with --data PATH")
    return next(iter(corpora.values()))
