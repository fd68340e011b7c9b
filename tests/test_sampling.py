import numpy as np
import pytest
import torch

from conftest import EACH_CONTROL, ScriptedBackend, random_tokens
from lal_core.backends import make_backend
from lal_core.data.tokenizer import encode
from lal_core.errors import ConfigError
from lal_core.generation.controls import Controls
from lal_core.generation.sampling import Generation, generate_ids, nucleus, stream
from lal_core.model.config import ModelConfig

SHORT = ModelConfig("short", n_layer=2, n_head=2, n_embd=32, block_size=16)


@pytest.fixture
def decisive():
    """A random model with large weights, so greedy choices are far from ties."""
    # On the CPU in float32: exact greedy equality is the point. A CPU with native bf16 would
    # sample from a bf16 copy by default (seen on a GPU machine's AVX-512 host); CUDA's bf16
    # copy and TF32 are checked in tests/test_cuda.py.
    # One decode thread: how many a generation gets otherwise follows the machine's load, and
    # two generations compared here must not differ by that (see the threads' own test).
    backend = make_backend(
        "torch", SHORT, seed=0, device="cpu", infer_dtype="float32", decode_threads=1
    )
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
    args = {"temperature": 1.0, "top_k": 5} | kwargs
    tokens = args.pop("max_new_tokens", 5)
    with pytest.raises(ConfigError, match=words):
        list(generate_ids(decisive, [1, 2], tokens, **args))


def test_empty_prompt(decisive):
    with pytest.raises(ConfigError, match="empty"):
        list(stream(decisive, "", 5))


# -- many samples at once -------------------------------------------------------------------
def each_alone(backend, prompt, n, controls, seed, rows):
    return [
        Generation(backend, prompt, n, controls, 1, seed + i).run()[0].tokens for i in range(rows)
    ]


@EACH_CONTROL
def test_a_batch_draws_what_each_row_draws_alone(decisive, controls):
    prompt = random_tokens((5,), seed=3).tolist()
    n = 30  # past block_size = 16: the batch's window slides too
    together = Generation(decisive, prompt, n, controls, 4, seed=11).run()
    assert [s.seed for s in together] == [11, 12, 13, 14]
    assert [s.tokens for s in together] == each_alone(decisive, prompt, n, controls, 11, 4)
    if controls.temperature > 0:
        assert len({tuple(s.tokens) for s in together}) > 1  # the rows do differ


def test_nucleus_of_one_changes_nothing_and_a_tiny_one_is_greedy(decisive):
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.97, 0.01, 0.01, 0.01]])
    assert nucleus(probs, 1.0) is probs
    assert np.allclose(nucleus(probs, 0.75), [[0.625, 0.375, 0, 0], [1, 0, 0, 0]])
    prompt = encode("ROMEO:")
    tiny_p = Controls(temperature=1.5, top_k=None, top_p=1e-6)
    drawn = Generation(decisive, prompt, 20, tiny_p, 3, seed=0).run()
    greedy = Generation(decisive, prompt, 20, Controls(temperature=0)).run()[0].tokens
    assert all(s.tokens == greedy for s in drawn)


def full_distribution(backend, context, penalty, seen):
    backend.start_generation(1)
    if penalty != 1:
        backend.see(np.array([seen]))
    logits = backend.prefill(np.array([context]))
    c = backend.candidates(logits, None, penalty, False)
    assert c.ids is None  # every token, in id order
    return np.exp(c.logits[0] - c.logits[0].max()) / np.exp(c.logits[0] - c.logits[0].max()).sum()


def test_the_repetition_penalty_lowers_seen_tokens_and_never_raises_them(decisive):
    context = random_tokens((8,), seed=5).tolist()
    plain = full_distribution(decisive, context, 1.0, context)
    penalised = full_distribution(decisive, context, 1.5, context)
    seen = np.zeros(plain.shape, bool)
    seen[context] = True
    assert (penalised[seen] < plain[seen]).all()  # lower, each of them
    assert (penalised[~seen] >= plain[~seen]).all()  # the others gain what they lose
    # In sampling: greedy without a penalty repeats itself here; with one it does much less.
    loops = Generation(decisive, context, 40, Controls(temperature=0)).run()[0].tokens
    varied = Generation(decisive, context, 40, Controls(0, repetition_penalty=3.0)).run()[0].tokens
    assert len(set(varied)) > len(set(loops))


def test_a_stop_string_ends_the_sample_before_it_and_is_not_shown(decisive):
    text = "Good morrow, my lord. Exit GLOUCESTER and more after it"
    script = encode(text)
    stops = Controls(stop=("Exit", "lord,"))  # "lord," never comes; "Exit" spans its tokens
    generation = Generation(ScriptedBackend(decisive, script), "x", len(script), stops)
    shown = "".join(p.text for p in generation)
    assert shown == generation.samples[0].text == "Good morrow, my lord. "
    sample = generation.samples[0]
    assert (sample.ended, sample.stop_string) == ("stop", "Exit")
    assert len(sample.tokens) < len(script)


def test_rows_end_apart_and_the_batch_stops_when_all_have(decisive):
    # The scripted draws are the same in every row; the rows' own stop strings are not.
    script = encode(" one two three four five six")
    backend = ScriptedBackend(decisive, script)
    samples = Generation(backend, "x", len(script), Controls(stop=(" three",)), 3).run()
    assert [s.text for s in samples] == [" one two"] * 3
    assert backend.drawn == len(encode(" one two three"))  # no step after the last row ended


def test_max_time_cuts_every_sample_short(decisive):
    samples = Generation(decisive, "ROMEO:", 500, Controls(max_time=1e-9), 2, seed=0).run()
    assert all(s.ended == "time" and len(s.tokens) < 500 for s in samples)


@pytest.mark.parametrize(
    "settings, words",
    [
        ("top_p=0", "top-p"),
        ("top_p=1.5", "top-p"),
        ("repetition_penalty=0.5", "repetition penalty"),
        ("max_time=0", "max-time"),
        ("temperature=hot", "needs a number"),
        ("top_q=0.9", "unknown sampling setting 'top_q=0.9'"),
        ("top_p", "unknown sampling setting"),
    ],
)
def test_bad_controls_are_one_line(settings, words):
    with pytest.raises(ConfigError, match=words) as caught:
        Controls().with_settings(settings)
    assert "\n" not in str(caught.value)


def test_settings_text_sets_the_controls():
    c = Controls().with_settings("top_p=0.9, repetition-penalty=1.3,top_k=none")
    assert (c.top_p, c.repetition_penalty, c.top_k) == (0.9, 1.3, None)
    assert c.describe() == "temperature 1, all tokens, top-p 0.9, repetition penalty 1.3"
    with pytest.raises(ConfigError, match="stop string is empty"):
        Controls(stop=("",)).check()
    with pytest.raises(ConfigError, match="number of samples"):
        Generation(None, "x", 5, Controls(), 0)


@pytest.mark.parametrize("infer_dtype", ["float32", "bfloat16"])
def test_the_threads_a_generation_gets_change_no_figure(decisive, infer_dtype):
    # How many threads sampling takes follows the machine's load (`sampling_threads`): the
    # tokens must not, nor their probabilities (a greedy pick's is under the full softmax)
    # beyond float32's rounding. Bit for bit they can: torch's CPU attention kernel splits its
    # work by the thread count, and on some CPUs (a Zen 4 EPYC) its float32 sums then round
    # apart, by about 1e-8.
    state = decisive.state_dict()
    drawn = []
    for threads in (1, 2):
        b = make_backend(
            "torch", SHORT, seed=0, device="cpu", infer_dtype=infer_dtype, decode_threads=threads
        )
        b.load_state_dict(state)
        prompt = [5, 9, 11]
        greedy = list(generate_ids(b, prompt, 20, temperature=0))
        drawn.append((greedy, list(generate_ids(b, prompt, 20, 0.9, 20, seed=3))))
    for one, two in zip(drawn[0], drawn[1], strict=True):  # greedy, then sampled
        assert [t for t, _ in one] == [t for t, _ in two]
        assert np.allclose([p for _, p in one], [p for _, p in two], rtol=1e-5, atol=0)


@pytest.mark.parametrize("infer_dtype", ["float32", "bfloat16"])
def test_a_greedy_tokens_probability_is_summed_on_one_thread(decisive, infer_dtype):
    # The logsumexp over the vocabulary behind a greedy pick's probability runs on one thread:
    # split over two, its float32 sum would round differently. From the same logits, the
    # thread count the generation got must change nothing, to the last bit.
    logits = torch.from_numpy(np.random.default_rng(0).standard_normal((2, SHORT.vocab_size)))
    lses = []
    for threads in (1, 2):
        b = make_backend(
            "torch", SHORT, seed=0, device="cpu", infer_dtype=infer_dtype, decode_threads=threads
        )
        b.start_generation(2)
        lses.append(b.candidates(logits.float(), 1, 1.0, True).lse)
    assert np.array_equal(lses[0], lses[1])


@pytest.mark.parametrize("infer_dtype", ["float32", "bfloat16"])
def test_readying_for_sampling_at_load_changes_no_token(decisive, infer_dtype):
    """`ready_for_sampling` makes the inference copy at load time: what is drawn afterwards is
    what a backend that makes it at the first token draws."""
    state = decisive.state_dict()
    # One decode thread for both: what the threads change is another test's.
    lazy, ready = (
        make_backend(
            "torch", SHORT, seed=0, device="cpu", infer_dtype=infer_dtype, decode_threads=1
        )
        for _ in range(2)
    )
    for backend in (lazy, ready):
        backend.load_state_dict(state)
    ready.ready_for_sampling()
    prompt = [5, 9, 11]
    greedy = [list(generate_ids(b, prompt, 20, temperature=0)) for b in (lazy, ready)]
    seeded = [list(generate_ids(b, prompt, 20, 0.9, 20, seed=3)) for b in (lazy, ready)]
    assert greedy[0] == greedy[1] and seeded[0] == seeded[1]
