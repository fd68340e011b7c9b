"""Chat generation: answer a question in the chat format and stop at the end marker."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lal_core.backends import Backend
from lal_core.errors import ConfigError
from lal_core.generation.controls import Controls
from lal_core.generation.sampling import DEFAULT_CONTROLS, Generation, Sample
from lal_core.runs.events import StopRequest
from lal_core.sft.chat_format import chat_prompt

# Where an answer ends: at `<|`, the start of any marker, or at `|end|`, the end marker's body.
# `<|end|>` is several BPE tokens, and a small model may write only part of it: `<|end|` then
# `elia`, on and on (a small base's answer), or `|end|end|end` without the `<` (a tiny one's).
# No answer contains either, so stopping there ends it however the marker was spelled.
ANSWER_STOPS = ("<|", "|end|")


def closed(sample: Sample) -> bool:
    """Whether the model ended this answer itself (at a marker), not the token limit."""
    return sample.ended == "stop" and sample.stop_string in ANSWER_STOPS


@dataclass
class ChatAnswer:
    text: str  # the answer, without the prompt or the closing marker, stripped
    ended: bool  # the model closed it (wrote a marker: `<|` or `|end|`); else the limit hit
    tokens: int  # tokens generated, up to the end


def answer_controls(controls: Controls = DEFAULT_CONTROLS) -> Controls:
    """`controls` that also stop where an answer ends."""
    return dataclasses.replace(controls, stop=(*controls.stop, *ANSWER_STOPS))


def answer_generation(
    backend: Backend,
    question: str,
    max_new_tokens: int = 100,
    controls: Controls = DEFAULT_CONTROLS,
    num_samples: int = 1,
    seed: int | None = None,
    stop: StopRequest | None = None,
) -> Generation:
    """num_samples answers to a question in the chat format, drawn together."""
    if not question.strip():
        raise ConfigError("the question is empty")
    prompt = chat_prompt(question)
    return Generation(
        backend, prompt, max_new_tokens, answer_controls(controls), num_samples, seed, stop=stop
    )


class AnswerStream:
    """The answer to a question in the chat format, as it is written: iterate it for pieces of
    text; once it is done, `ended` says whether the model closed the answer (else it hit the
    token limit) and `tokens` how many it drew. The end marker is never yielded."""

    def __init__(self, backend: Backend, question: str, **options: Any) -> None:
        self.generation = answer_generation(backend, question, **options)
        self.sample = self.generation.samples[0]

    def __iter__(self) -> Iterator[str]:
        for piece in self.generation:
            if piece.text:
                yield piece.text

    @property
    def ended(self) -> bool:
        return closed(self.sample)

    @property
    def tokens(self) -> int:
        return len(self.sample.tokens)


def stream_answer(backend: Backend, question: str, **options: Any) -> AnswerStream:
    """Answer a question, yielding answer text as it is written (options: `answer_generation`'s)."""
    return AnswerStream(backend, question, **options)


def chat(backend: Backend, question: str, **options: Any) -> ChatAnswer:
    """The whole answer, stripped, and whether the model closed it."""
    stream = AnswerStream(backend, question, **options)
    text = "".join(stream)
    return ChatAnswer(text.strip(), stream.ended, stream.tokens)


def answer(backend: Backend, question: str, **options: Any) -> str:
    """The answer text only (stripped), without the prompt or the end marker."""
    return chat(backend, question, **options).text
