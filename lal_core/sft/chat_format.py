"""The chat format SFT trains on, and its batches: which tokens count in the loss.

The format is plain text (r50k_base has no such special tokens, so each marker is several
ordinary BPE tokens):

    prompt = "<|system|>You are a helpful assistant trained on Shakespeare.<|end|>\\n"
             "<|user|>QUESTION<|end|>\\n"
             "<|assistant|>"
    answer = "ANSWER<|end|>"

No space after `<|assistant|>` and none before the closing `<|end|>`; one newline between turns.
The prompt and the answer are encoded separately and joined, so the answer's tokens are the
same whichever prompt precedes it, and generation encodes exactly the same prompt.

Training counts the loss only on the answer: every target that is a prompt token is -1, the
answer's tokens and its closing `<|end|>` are counted (that is what lets generation stop).
Batches are padded on the right to the longest example, with ignored targets. An example longer
than the context is cut from the left (the answer is kept, as generation crops its context
from the left too), with a warning.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lal_core.data.tokenizer import EOT_TOKEN, StreamDecoder, encode
from lal_core.errors import ConfigError, DataError

SYSTEM_MARK, USER_MARK, ASSISTANT_MARK, END_MARK = (
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
SYSTEM_LINE = "You are a helpful assistant trained on Shakespeare."
BUILTIN_PAIRS_PATH = Path(__file__).with_name("sft_pairs.jsonl")
BUILTIN_REPEAT = 5  # ten pairs, five times each: 50 examples
DEFAULT_SEED = 1337  # of a fine-tune, and of the answers before and after it
HELD_OUT_QUESTION = "Who is Juliet?"  # not in the training pairs: the before/after shows it
# Questions like the built-in pairs' but not among them: what a report asks besides those.
HELD_OUT_QUESTIONS = (HELD_OUT_QUESTION, "Where is Othello set?", "Who is Falstaff?")
PAD_TOKEN = EOT_TOKEN  # what padded inputs hold; their targets are -1, so it never counts


class SFTWarning(UserWarning):
    """Something SFT changed in the data (an example cut to fit the context)."""


# -- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass(frozen=True)
class Example:
    """One tokenised chat example: the whole sequence, of which the first n_prompt are prompt.

    The model reads ids[:-1] and predicts ids[1:]; a prediction counts in the loss only when
    the token it predicts is an answer token (position >= n_prompt).
    """

    ids: tuple[int, ...]
    n_prompt: int
    question: str = ""
    answer: str = ""
    cut: int = 0  # tokens dropped from the left to fit the context

    @property
    def tokens(self) -> list[int]:
        """The model's inputs."""
        return list(self.ids[:-1])

    @property
    def targets(self) -> list[int]:
        """The next token at each input position, or -1 where that token is prompt."""
        return [t if i + 1 >= self.n_prompt else -1 for i, t in enumerate(self.ids[1:])]

    @property
    def n_counted(self) -> int:
        return max(len(self.ids) - max(self.n_prompt, 1), 0)


def chat_prompt(question: str) -> str:
    """The prompt the model answers: system line, user turn, and the assistant marker."""
    return (
        f"{SYSTEM_MARK}{SYSTEM_LINE}{END_MARK}\n{USER_MARK}{question.strip()}{END_MARK}\n"
        f"{ASSISTANT_MARK}"
    )


def chat_answer(answer: str) -> str:
    """The text the model learns to write after the prompt: the answer and the closing marker."""
    return f"{answer.strip()}{END_MARK}"


def load_pairs(path: str | Path) -> list[QAPair]:
    """Question-answer pairs from JSON lines `{"question": ..., "answer": ...}`.

    Blank lines are skipped; any other line that is not such an object is a one-line
    `DataError` naming its line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"pairs file not found: {path}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"cannot read pairs file {path}: {exc.strerror or exc}") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f'{where} is not a JSON object like {{"question": ..., "answer": ...}}')
        for key in ("question", "answer"):
            value = obj.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f'{where} needs a non-empty string "{key}"')
        pairs.append(QAPair(obj["question"].strip(), obj["answer"].strip()))
    if not pairs:
        raise DataError(f"{path} holds no question-answer pairs")
    return pairs


def builtin_pairs() -> list[QAPair]:
    """The ten question-answer pairs about Shakespeare's plays written for this project."""
    return load_pairs(BUILTIN_PAIRS_PATH)


def make_example(pair: QAPair, block_size: int | None = None) -> Example:
    """Tokenise one pair; longer than block_size + 1 tokens, it is cut from the left."""
    prompt, answer = encode(chat_prompt(pair.question)), encode(chat_answer(pair.answer))
    ids, n_prompt, cut = prompt + answer, len(prompt), 0
    if block_size is not None and len(ids) > block_size + 1:
        cut = len(ids) - (block_size + 1)
        ids, n_prompt = ids[cut:], max(n_prompt - cut, 0)
    return Example(tuple(ids), n_prompt, pair.question, pair.answer, cut)


def make_examples(
    pairs: Sequence[QAPair], block_size: int, repeat: int = BUILTIN_REPEAT
) -> list[Example]:
    """Each pair `repeat` times, tokenised; warns (SFTWarning) if any had to be cut."""
    if repeat < 1:
        raise ConfigError(f"repeat must be at least 1, got {repeat}")
    once = [make_example(p, block_size) for p in pairs]
    cut = [e for e in once if e.cut]
    if cut:
        longest = max(cut, key=lambda e: e.cut)
        warnings.warn(
            f"{len(cut)} of {len(once)} pairs are longer than the model's context "
            f"({block_size} tokens) and were cut from the left, e.g. {longest.question!r} "
            f"({len(longest.ids) + longest.cut} tokens)",
            SFTWarning,
            stacklevel=2,
        )
    return [e for _ in range(repeat) for e in once]


def token_mask(example: Example | QAPair, block_size: int | None = None) -> list[tuple[str, bool]]:
    """For the dashboard: each token of an example with its text and whether it counts.

    A token counts when the model is trained to predict it (an answer token or the closing
    marker). The texts joined give the example's text; a multi-byte character shows on the
    token that completes it (earlier pieces are '').
    """
    if isinstance(example, QAPair):
        example = make_example(example, block_size)
    decoder = StreamDecoder()
    out = [(decoder.push(t), i >= max(example.n_prompt, 1)) for i, t in enumerate(example.ids)]
    tail = decoder.flush()
    if tail and out:
        out[-1] = (out[-1][0] + tail, out[-1][1])
    return out


def make_batch(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets (B, T) for T the longest example; padding is ignored (-1)."""
    T = max(len(e.ids) - 1 for e in examples)
    x = np.full((len(examples), T), PAD_TOKEN, dtype=np.int64)
    y = np.full((len(examples), T), -1, dtype=np.int64)
    for row, e in enumerate(examples):
        n = len(e.ids) - 1
        x[row, :n] = e.tokens
        y[row, :n] = e.targets
    return x, y
