"""Samples at every eval: what the model writes, watched as it learns to write.

After each eval (rank 0 alone), a run draws a few short samples from the weights it has at that
iteration: the same prompts, seeds and sampling controls every time, so that what changes from
one eval to the next is the model alone. Sample i continues prompt i, drawn alone with seed
`seed + i`: exactly what `lal sample --prompt PROMPT --seed SEED+i --tokens N` draws from a
checkpoint of those weights. Each piece of text is an event as it is drawn (`SampleText`, logged
in metrics.jsonl), so every follower streams it; the whole samples and their writing figures
follow (`SamplesDone`, typed as `records.SamplesRecord`), beside the same figures of the
held-out text that follows the same prompts in the val split.

    pre-training  prompts: the starts of val paragraphs (`writing.prompts`, as `lal report`)
    fine-tuning   prompts: a training question and a held-out one, answered in the chat format
                  up to its end marker; the figures add the share of answers closed

Memorisation is searched in the training split's suffix array (`writing.verbatim`), cached
beside the corpus's tokens. A run builds it once where the split is at most
BUILD_INDEX_TOKENS tokens (TinyShakespeare's 304k: 0.5 s); for a larger corpus it uses the
cached index only (`lal report` builds it once), and without one the memorisation figures are
left out, so that a corpus of gigabytes never makes an eval slow. A lookup is a binary search
per sample token in a memory-mapped array: milliseconds, whatever the corpus's size.

Drawing never stops a run: a stop request ends the samples at once (status "stopped"); a
sample that is not finite (NaN in the weights) or any error is one line (status "failed").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lal_core.backends.base import Backend
from lal_core.data.corpus import Corpus
from lal_core.data.tokenizer import decode, encode
from lal_core.errors import ConfigError
from lal_core.generation.controls import DEFAULT_PROMPT, Controls
from lal_core.generation.sampling import Generation, Sample
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev
from lal_core.runs.events import EventCallback, StopRequest
from lal_core.runs.records import Figures, SamplesRecord
from lal_core.writing.figures import figures_of
from lal_core.writing.prompts import text_prompts
from lal_core.writing.verbatim import VerbatimIndex, index_path

BUILD_INDEX_TOKENS = 10_000_000


@dataclass
class EvalSamples:
    """The samples a run draws at each eval (or each fine-tuning epoch's end)."""

    backend: Backend
    prompts: list[str]  # as shown
    model_prompts: list[str]  # as the model reads them (fine-tuning: in the chat format)
    tokens: int  # per sample, at most
    seed: int
    controls: Controls
    stop: StopRequest  # this process's own (on several ranks rank 0 alone draws)
    index: VerbatimIndex | None = None  # the training split's, for memorisation
    held_out: Figures | None = None  # the held-out text's figures, the same every eval
    closes: Callable[[Sample], bool] | None = None  # fine-tuning: whether an answer closed

    @classmethod
    def for_pretraining(
        cls, backend: Backend, corpus: Corpus, cfg: TrainConfig, stop: StopRequest
    ) -> EvalSamples | None:
        """The recipe's samples (`eval_samples` of `eval_sample_tokens` tokens, the run's
        seed) from val paragraphs' starts; None where it asks for none."""
        count, tokens, seed = cfg.eval_samples, cfg.eval_sample_tokens, cfg.seed
        if count < 1:
            return None
        val = np.asarray(corpus.val)
        try:
            ids, baseline = text_prompts(val, count, 1, tokens)
        except ConfigError:  # a val split too short for paragraphs: the default prompt
            ids, baseline = [encode(DEFAULT_PROMPT)] * count, None
        # As text, re-encoded: the tokens `lal sample --prompt TEXT` would read.
        prompts = [decode(p) for p in ids]
        index = training_index(corpus)
        held_out = figures_of(baseline, index) if baseline else None
        controls = Controls(temperature=cfg.eval_temperature)
        return cls(backend, prompts, prompts, tokens, seed, controls, stop, index, held_out)

    def draw(self, iteration: int, emit: EventCallback) -> SamplesRecord:
        """Draw every sample, each piece of text emitted as it comes, then the whole; returned
        as recorded. Never raises for what the model does: a failure is the record's line."""
        t0 = time.perf_counter()
        emit(
            ev.SamplesStarted(
                iteration=iteration,
                prompts=tuple(self.prompts),
                tokens=self.tokens,
                seed=self.seed,
                controls=self.controls.describe(),
            )
        )
        samples: list[Sample] = []
        try:
            status, why = self._draw_all(iteration, emit, samples)
        except Exception as exc:  # noqa: BLE001 - samples are something to watch: never a crash
            status, why = "failed", f"{type(exc).__name__}: {str(exc)[:160]}"
        figures = self._figures(samples) if status == "done" else None
        line = f"samples at iter {iteration} failed: {why}; training goes on" if why else ""
        record = SamplesRecord(
            iteration=iteration,
            status=status,
            prompts=tuple(self.prompts),
            texts=tuple(s.text for s in samples),
            figures=figures,
            held_out=self.held_out,
            seconds=time.perf_counter() - t0,
            line=line,
        )
        emit(ev.SamplesDone.from_record(record))
        return record

    def _draw_all(
        self, iteration: int, emit: EventCallback, samples: list[Sample]
    ) -> tuple[str, str]:
        """(status, why it failed or ''), each sample appended to `samples` once whole."""
        for i, prompt in enumerate(self.model_prompts):
            generation = Generation(
                self.backend, prompt, self.tokens, self.controls, 1, self.seed + i, stop=self.stop
            )
            for piece in generation:
                if piece.token >= 0 and not math.isfinite(piece.prob):
                    return "failed", "the model's output is not finite (NaN in its weights?)"
                if piece.text:
                    emit(ev.SampleText(iteration=iteration, index=i, text=piece.text))
            if self.stop.is_set():
                return "stopped", ""
            samples.append(generation.samples[0])
        return "done", ""

    def _figures(self, samples: Sequence[Sample]) -> Figures:
        closed = None
        if self.closes is not None and samples:
            closed = float(np.mean([self.closes(s) for s in samples]))
        return figures_of([encode(s.text) for s in samples], self.index, closed)


def training_index(corpus: Corpus) -> VerbatimIndex | None:
    """The training split's verbatim index: the cached one, else built where the split is small
    enough (BUILD_INDEX_TOKENS); None for a large one with no cache (module docstring)."""
    path = index_path(corpus)
    cached = path is not None and path.is_file()
    if not cached and len(corpus.train) > BUILD_INDEX_TOKENS:
        return None
    return VerbatimIndex.for_corpus(corpus)
