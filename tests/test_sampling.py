import numpy as np
import pytest

from conftest import random_tokens
from lal_core.backends import make_backend
from lal_core.config import ModelConfig
from lal_core.errors import ConfigError
from lal_core.sampling import generate_ids, stream
from lal_core.tokenizer import encode

SHORT = ModelConfig("short", n_layer=2, n_head=2, n_embd=32, block_size=16)


@pytest.fixture
def decisive():
    """A random model with large weights, so greedy choices are far from ties."""
    # On the CPU in float32: exact greedy equality is the point. A CPU with native bf16 would
    # sample from a bf16 copy by default (seen on a GPU machine's AVX-512 host); CUDA's bf16
    # copy and TF32 are checked in tests/test_cuda.py.
    backend = make_backend("torch", SHORT, seed=0, device="cpu", infer_dtype="float32")
    rng = np.random.default_rng(0)
    backend.load_state_dict(
        {
            k: (rng.standard_normal(v.shape) * (0.3 if v.ndim > 1 else 0.1) + (v.ndim == 1)).astype(
                np.float32
            )
            for k, v in backend.state_dict().items()
        }
    )
    return backend


def reference_greedy(backend, prompt, n):
    """Full recompute of the last block_size tokens for every new token."""
    context = list(prompt)
    out = []
    for _ in range(n):
        window = np.array([context[-SHORT.block_size :]])
        token = int(np.argmax(backend.logits(window)[0, -1]))
        out.append(token)
        context.append(token)
    return out


def test_kv_cache_greedy_equals_full_recompute_also_past_block_size(decisive):
    prompt = random_tokens((5,), seed=1).tolist()
    n = 40  # runs well past block_size = 16: the window slides
    cached = [t for t, _ in generate_ids(decisive, prompt, n, temperature=0, use_cache=True)]
    uncached = [t for t, _ in generate_ids(decisive, prompt, n, temperature=0, use_cache=False)]
    assert cached == uncached == reference_greedy(decisive, prompt, n)
    assert len(set(cached)) > 3  # not a degenerate constant stream


def test_long_prompt_is_cropped_to_block_size(decisive):
    prompt = random_tokens((50,), seed=2).tolist()
    got = [t for t, _ in generate_ids(decisive, prompt, 3, temperature=0)]
    assert got == reference_greedy(decisive, prompt[-16:], 3)


def test_seeded_sampling_is_reproducible_and_top_k_holds(decisive):
    prompt = encode("ROMEO:")
    a = list(generate_ids(decisive, prompt, 20, temperature=1.0, top_k=5, seed=3))
    b = list(generate_ids(decisive, prompt, 20, temperature=1.0, top_k=5, seed=3))
    c = list(generate_ids(decisive, prompt, 20, temperature=1.0, top_k=5, seed=4))
    assert a == b and a != c
    # With top_k=1 sampling is greedy whatever the temperature.
    top1 = [t for t, _ in generate_ids(decisive, prompt, 10, temperature=2.0, top_k=1, seed=5)]
    greedy = [t for t, _ in generate_ids(decisive, prompt, 10, temperature=0)]
    assert top1 == greedy


class ScriptedBackend:
    """Wraps a backend but draws a fixed token sequence, to test the text stream."""

    def __init__(self, inner, tokens):
        self.inner, self.tokens, self.cfg = inner, list(tokens), inner.cfg

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sample(self, logits, temperature, top_k):
        return self.tokens.pop(0), 0.5


def test_stream_never_yields_replacement_characters(decisive):
    text = "Ça va? 日本 🎉 naïve"
    tokens = encode(text)
    pieces = list(stream(ScriptedBackend(decisive, tokens), "x", len(tokens)))
    assert [p.token for p in pieces] == tokens
    assert all("\ufffd" not in p.text for p in pieces)
    assert "".join(p.text for p in pieces) == text


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_k": 0}, "top-k"),
        ({"max_new_tokens": 0}, "tokens"),
    ],
)
def test_bad_sampling_arguments(decisive, kwargs, words):
    args = {"max_new_tokens": 5, "temperature": 1.0, "top_k": 5} | kwargs
    with pytest.raises(ConfigError, match=words):
        list(stream(decisive, "hi", **args))


def test_empty_prompt(decisive):
    with pytest.raises(ConfigError, match="empty"):
        list(stream(decisive, "", 5))
