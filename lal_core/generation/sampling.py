"""Sampling: draw one or many samples of a prompt at once and stream their text as it completes.

The loop is written once for every backend. Its rows are samples of the same prompt, drawn
together (one sequence per row, one batch through the KV cache):

    context = prompt[-block_size:]                     (1, T): the same for every row at first
    logits  = the last position's logits               (rows, V)
    repeat: the backend picks each row's candidates    (repetition penalty, top k)
            `draw` takes one token per row             (temperature, top p, the row's own seed)
            then the next logits: one cached step while the context fits in block_size,
            else a full recompute of the last block_size tokens (the window slides by one).

With absolute position embeddings every position moves when the window slides, so cached keys
and values are only valid until the context first fills the block.

Row i draws its random numbers from its own generator, seeded with seed + i: sample i of a
batch is the sample that seed + i draws alone, and since the draw happens here, in numpy, a seed
draws the same way on every backend.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# numpy loads its random module at first use: 12 ms of a first token, paid here instead
from numpy.random import default_rng

from lal_core.backends import Backend
from lal_core.backends.base import Candidates
from lal_core.data.tokenizer import StreamDecoder, encode
from lal_core.errors import ConfigError, LalError
from lal_core.generation.controls import (  # noqa: F401  (the defaults are part of this module's API)
    DEFAULT_PROMPT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOKENS,
    DEFAULT_TOP_K,
    Controls,
)
from lal_core.model.config import ModelConfig
from lal_core.runs.events import StopRequest

DEFAULT_CONTROLS = Controls()


@dataclass(frozen=True)
class SampledToken:
    token: int  # -1 once a sample is cut short: no token, the text it held back
    text: str  # text this token makes visible ('' while a character is split or a stop held)
    prob: float  # the token's probability under the distribution it was drawn from
    row: int = 0  # which sample of the batch


@dataclass
class Sample:
    """One sample, whole: its text (without the prompt or a stop string) and how it ended."""

    text: str
    tokens: list[int] = field(default_factory=list)  # the tokens drawn, up to its end
    seed: int = 0  # draws it again alone
    ended: str = ""  # once done: "length" (token limit), "stop" (a stop string), "time",
    # or "stopped" (a stop request)
    stop_string: str = ""  # the one it ended at


def check_tokens(max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise ConfigError(f"tokens must be at least 1, got {max_new_tokens}")


def check_generation(
    prompt: str | list[int], max_new_tokens: int, controls: Controls, rows: int
) -> None:
    """A one-line ConfigError for anything a generation cannot start from."""
    if not prompt:
        raise ConfigError("the prompt is empty; give at least one character")
    controls.check()
    check_tokens(max_new_tokens)
    if rows < 1:
        raise ConfigError(f"the number of samples must be at least 1, got {rows}")


def resolve_seed(seed: int | None) -> int:
    """The seed of a generation: the one given, checked, or a random one (reported, so that it
    can be drawn again)."""
    if seed is None:
        return int.from_bytes(os.urandom(4), "little") >> 1
    if seed < 0:
        raise ConfigError(f"the seed must be 0 or more, got {seed}")
    return seed


def nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """probs (rows, k), each row sorted from most to least likely, cut to the smallest head
    whose sum reaches top_p, renormalised. top_p 1 changes nothing; a tiny one keeps the first."""
    if top_p >= 1:
        return probs
    before = np.cumsum(probs, axis=-1) - probs  # (rows, k): the mass of the likelier tokens
    kept = np.where(before < top_p, probs, 0.0)  # the first always stays (its `before` is 0)
    return kept / kept.sum(axis=-1, keepdims=True)


def draw(
    c: Candidates, temperature: float, top_p: float, generators: list[np.random.Generator]
) -> tuple[np.ndarray, np.ndarray]:
    """One token per row from its candidates: (tokens (rows,), their probabilities (rows,)).

    The probability is the token's under the distribution it was drawn from (after top-k and
    top-p); a greedy pick's is under the full softmax.
    """
    logits = c.logits.astype(np.float64)  # (rows, k)
    rows = np.arange(logits.shape[0])
    ids = c.ids if c.ids is not None else np.broadcast_to(np.arange(logits.shape[1]), logits.shape)
    if temperature == 0:
        j = logits.argmax(axis=-1)
        return ids[rows, j], np.exp(logits[rows, j] - c.lse)
    if c.ids is not None or top_p < 1:
        # One order for every backend (likeliest first, ties by id): a random number then picks
        # the same token whichever order the backend returned its top k in.
        order = np.lexsort((ids, -logits), axis=-1)
        logits = np.take_along_axis(logits, order, axis=-1)
        ids = np.take_along_axis(ids, order, axis=-1)
    scaled = logits / temperature
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs = nucleus(probs / probs.sum(axis=-1, keepdims=True), top_p)
    # Inverse CDF: the first token whose cumulative probability passes the row's number.
    u = np.array([g.random() for g in generators])  # (rows,)
    cdf = np.cumsum(probs, axis=-1)
    j = np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1), probs.shape[1] - 1)
    return ids[rows, j], probs[rows, j]


def generate_rows(
    backend: Backend,
    prompt: list[int],
    max_new_tokens: int,
    controls: Controls = DEFAULT_CONTROLS,
    rows: int = 1,
    seed: int | None = None,
    use_cache: bool = True,
    stop: StopRequest | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (tokens (rows,), probabilities (rows,)) for each step as soon as it is drawn.

    Ends after max_new_tokens, at a stop request, or past controls.max_time; stop strings are
    text, so they are `Generation`'s.
    """
    check_generation(prompt, max_new_tokens, controls, rows)
    seed = resolve_seed(seed)
    generators = [default_rng(seed + i) for i in range(rows)]
    deadline = None if controls.max_time is None else time.monotonic() + controls.max_time
    greedy = controls.temperature == 0
    top_k = 1 if greedy else controls.top_k
    penalty = controls.repetition_penalty
    block = backend.cfg.block_size

    backend.start_generation(rows)
    context = np.array([prompt[-block:]], dtype=np.int64)  # (1, T): every row's, for now
    if penalty != 1:
        backend.see(np.repeat(np.array([prompt], dtype=np.int64), rows, axis=0))
    logits = backend.prefill(context, use_cache)
    for n in range(max_new_tokens):
        if stop is not None and stop.is_set():
            return
        if deadline is not None and time.monotonic() > deadline:
            return
        tokens, probs = draw(
            backend.candidates(logits, top_k, penalty, greedy),
            controls.temperature,
            controls.top_p,
            generators,
        )
        yield tokens, probs
        if n == max_new_tokens - 1:
            return
        if penalty != 1:
            backend.see(tokens[:, None])
        context = np.concatenate(
            [np.broadcast_to(context, (rows, context.shape[1])), tokens[:, None]], axis=1
        )
        if use_cache and context.shape[1] <= block:
            logits = backend.extend(tokens)
        else:
            context = context[:, -block:]
            logits = backend.prefill(context, use_cache=False)


def generate_ids(
    backend: Backend,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = DEFAULT_TOP_K,
    seed: int | None = None,
    use_cache: bool = True,
    stop: StopRequest | None = None,
    **controls: object,
) -> Iterator[tuple[int, float]]:
    """One sample's (token, probability) as each is drawn; `controls`: `Controls`' other fields."""
    settings = Controls(temperature, top_k, **controls)  # type: ignore[arg-type]
    steps = generate_rows(backend, prompt, max_new_tokens, settings, 1, seed, use_cache, stop)
    for tokens, probs in steps:
        yield int(tokens[0]), float(probs[0])


class _RowText:
    """One row's text as its tokens come, with stop strings found in the text (a stop string
    may span several tokens, and a token may hold more than one): text that might be the start
    of one is held back until it is clearly not, and a stop string is never shown."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.decoder = StreamDecoder()
        self.text, self.shown = "", 0
        self.stop_string = ""

    def push(self, token: int) -> str:
        """The text this token makes visible."""
        self.text += self.decoder.push(token)
        if self.stops:
            start = max(self.shown - max(map(len, self.stops)), 0)
            hits = [(i, s) for s in self.stops if (i := self.text.find(s, start)) >= 0]
            if hits:
                end, self.stop_string = min(hits)
                self.text = self.text[:end]
                return self._show(end)
        return self._show(len(self.text) - self._held_back())

    def finish(self) -> str:
        """What is left to show once no token follows: held-back text, a split character."""
        if not self.stop_string:
            self.text += self.decoder.flush()  # an unfinished last character shows as U+FFFD
        return self._show(len(self.text))

    def _held_back(self) -> int:
        """How many characters at the end could be the start of a stop string."""
        for n in range(min(max(map(len, self.stops), default=1) - 1, len(self.text)), 0, -1):
            if any(s.startswith(self.text[-n:]) for s in self.stops):
                return n
        return 0

    def _show(self, upto: int) -> str:
        new, self.shown = self.text[self.shown : upto], max(upto, self.shown)
        return new


class Generation:
    """num_samples samples of one prompt drawn as one batch. Iterate it for each token as it is
    drawn, with the text it makes visible (`SampledToken.row` says whose); once it is done,
    `samples` holds each one whole. Sample i draws with seed + i (`seed`: the one used, drawn
    at random when none is given)."""

    def __init__(
        self,
        backend: Backend,
        prompt: str | list[int],
        max_new_tokens: int = DEFAULT_TOKENS,
        controls: Controls = DEFAULT_CONTROLS,
        num_samples: int = 1,
        seed: int | None = None,
        use_cache: bool = True,
        stop: StopRequest | None = None,
    ) -> None:
        check_generation(prompt, max_new_tokens, controls, num_samples)
        self.controls = controls
        self.seed = resolve_seed(seed)
        self.prompt = encode(prompt) if isinstance(prompt, str) else list(prompt)
        self.max_new_tokens, self.num_samples = max_new_tokens, num_samples
        self._steps = generate_rows(
            backend, self.prompt, max_new_tokens, controls, num_samples, self.seed, use_cache, stop
        )
        self._stop = stop
        self.samples = [Sample("", seed=self.seed + i) for i in range(num_samples)]

    def __iter__(self) -> Iterator[SampledToken]:
        rows = [_RowText(self.controls.stop) for _ in self.samples]
        live = set(range(self.num_samples))
        for tokens, probs in self._steps:
            for i in sorted(live):
                token, row, sample = int(tokens[i]), rows[i], self.samples[i]
                sample.tokens.append(token)
                text = row.push(token)
                if row.stop_string:
                    sample.ended, sample.stop_string = "stop", row.stop_string
                    live.discard(i)
                elif len(sample.tokens) == self.max_new_tokens:
                    text += row.finish()
                    sample.ended = "length"
                sample.text = row.text
                yield SampledToken(token, text, float(probs[i]), i)
            if not live:
                break  # every row has met a stop string: no need to draw on
        for i in sorted(live):
            sample = self.samples[i]
            if not sample.ended:  # cut short: by a stop request or by max_time
                stopped = self._stop is not None and self._stop.is_set()
                sample.ended = "stopped" if stopped else "time"
                rest = rows[i].finish()
                sample.text = rows[i].text
                if rest:
                    yield SampledToken(-1, rest, 0.0, i)  # no new token: the text held back

    def run(self) -> list[Sample]:
        """Draw every sample to its end; the samples."""
        for _ in self:
            pass
        return self.samples


def stream(
    backend: Backend,
    prompt: str,
    max_new_tokens: int = DEFAULT_TOKENS,
    controls: Controls = DEFAULT_CONTROLS,
    seed: int | None = None,
    use_cache: bool = True,
    stop: StopRequest | None = None,
) -> Iterator[SampledToken]:
    """One sample of a text prompt, yielding each token with the text it makes visible."""
    return iter(Generation(backend, prompt, max_new_tokens, controls, 1, seed, use_cache, stop))


def load_for_sampling(
    checkpoint, backend: str = "torch", device: str | None = None, **options
) -> Backend:
    """A backend holding the weights of a checkpoint file, ready to sample. `options` are the
    backend's switches (e.g. int8_head=False; see `make_backend`)."""
    from lal_core.backends import make_backend
    from lal_core.runs.checkpoints import load_weights
    from lal_core.runs.files import read_json

    expected = None
    run_json = Path(checkpoint).parent / "run.json"
    if run_json.is_file():  # in a run folder: the file must fit the run's model
        with contextlib.suppress(LalError, KeyError, TypeError):
            expected = ModelConfig.from_dict(read_json(run_json)["model_config"])
    tensors, cfg = load_weights(checkpoint, expected)
    model = make_backend(backend, cfg, device=device, **options)
    model.load_state_dict(tensors)
    model.ready_for_sampling()  # the inference copy now, not at the first token
    return model
