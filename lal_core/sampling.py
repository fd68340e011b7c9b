"""Sampling: draw tokens one at a time and stream their text as soon as it is complete.

The loop is written once for every backend:

    context = prompt[-block_size:]
    logits  = last position's logits for the context
    repeat: draw a token from logits / temperature within the top k, yield it,
            then get the next logits: one cached step while the context fits in block_size,
            else a full recompute of the last block_size tokens (the window slides by one).

With absolute position embeddings every position moves when the window slides, so cached keys
and values are only valid until the context first fills the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lal_core.backends import Backend
from lal_core.config import ModelConfig
from lal_core.errors import ConfigError, LalError
from lal_core.events import StopRequest
from lal_core.tokenizer import StreamDecoder, encode

# One set of defaults for every front end (`lal sample`, the dashboard's Sample pane): a
# speaker's name starts the text the way the corpus does; 0.8 is a little sharper than the
# original write-up's 1.0, which on models this small gives more broken words; top-k 50 as
# the SPEC.
DEFAULT_PROMPT = "ROMEO:"
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 50
DEFAULT_TOKENS = 200


@dataclass(frozen=True)
class SampledToken:
    token: int
    text: str  # text completed by this token ('' while a multi-byte character is split)
    prob: float  # the token's probability under the distribution it was drawn from


def check_sampling_args(temperature: float, top_k: int | None, max_new_tokens: int) -> None:
    if not temperature >= 0:
        raise ConfigError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top-k must be at least 1, got {top_k}")
    if max_new_tokens < 1:
        raise ConfigError(f"tokens must be at least 1, got {max_new_tokens}")


def generate_ids(
    backend: Backend,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = DEFAULT_TOP_K,
    seed: int | None = None,
    use_cache: bool = True,
    stop: StopRequest | None = None,
) -> Iterator[tuple[int, float]]:
    """Yield (token, probability) for each new token as soon as it is drawn."""
    check_sampling_args(temperature, top_k, max_new_tokens)
    if not prompt:
        raise ConfigError("the prompt is empty; give at least one character")
    block = backend.cfg.block_size
    backend.start_generation(seed)
    context = list(prompt[-block:])
    logits = backend.prefill(context, use_cache)
    for n in range(max_new_tokens):
        if stop is not None and stop.is_set():
            return
        token, prob = backend.sample(logits, temperature, top_k)
        yield token, prob
        if n == max_new_tokens - 1:
            return
        context.append(token)
        if use_cache and len(context) <= block:
            logits = backend.extend(token)
        else:
            context = context[-block:]
            logits = backend.prefill(context, use_cache=False)


def stream(
    backend: Backend,
    prompt: str,
    max_new_tokens: int = DEFAULT_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = DEFAULT_TOP_K,
    seed: int | None = None,
    use_cache: bool = True,
    stop: StopRequest | None = None,
) -> Iterator[SampledToken]:
    """Generate from a text prompt, yielding each token with the text it completes."""
    if prompt == "":
        raise ConfigError("the prompt is empty; give at least one character")
    decoder = StreamDecoder()
    ids = generate_ids(
        backend, encode(prompt), max_new_tokens, temperature, top_k, seed, use_cache, stop
    )
    for n, (token, prob) in enumerate(ids, start=1):
        text = decoder.push(token)
        if n == max_new_tokens:
            text += decoder.flush()  # an unfinished last character shows as U+FFFD, not nothing
        yield SampledToken(token, text, prob)


def load_for_sampling(
    checkpoint, backend: str = "torch", device: str | None = None, **options
) -> Backend:
    """A backend holding the weights of a checkpoint file, ready to sample. `options` are the
    backend's switches (e.g. int8_head=False; see `make_backend`)."""
    from lal_core.backends import make_backend
    from lal_core.checkpoint import load_weights, read_json

    expected = None
    run_json = Path(checkpoint).parent / "run.json"
    if run_json.is_file():  # in a run folder: the file must fit the run's model
        with contextlib.suppress(LalError, KeyError, TypeError):
            expected = ModelConfig.from_dict(read_json(run_json)["model_config"])
    tensors, cfg = load_weights(checkpoint, expected)
    model = make_backend(backend, cfg, device=device, **options)
    model.load_state_dict(tensors)
    return model
