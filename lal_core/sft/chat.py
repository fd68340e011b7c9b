"""Chat generation: answer a question in the chat format and stop at the end marker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lal_core.backends import Backend
from lal_core.errors import ConfigError
from lal_core.events import StopRequest
from lal_core.sampling import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    check_sampling_args,
    generate_ids,
)
from lal_core.sft.chat_format import END_MARK, chat_prompt
from lal_core.tokenizer import StreamDecoder, encode


@dataclass
class ChatAnswer:
    text: str  # the answer, without the prompt or the closing marker, stripped
    ended: bool  # the model wrote <|end|> (else it hit the token limit)
    tokens: int  # tokens generated, the marker's included


def _held_back(text: str) -> int:
    """How many characters at the end of `text` could be the start of the end marker."""
    for n in range(min(len(END_MARK) - 1, len(text)), 0, -1):
        if END_MARK.startswith(text[-n:]):
            return n
    return 0


class AnswerStream:
    """The answer to a question in the chat format, as it is written: iterate it for pieces of
    text; once it is done, `ended` says whether the model closed the answer with `<|end|>`
    (else it hit the token limit) and `tokens` how many it drew, the marker's included.

    The marker is several tokens, so it is found in the decoded text, never yielded: text that
    might be its beginning is held back until it is clearly not.
    """

    def __init__(
        self,
        backend: Backend,
        question: str,
        max_new_tokens: int = 100,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int | None = DEFAULT_TOP_K,
        seed: int | None = None,
        stop: StopRequest | None = None,
    ) -> None:
        check_sampling_args(temperature, top_k, max_new_tokens)
        if not question.strip():
            raise ConfigError("the question is empty")
        prompt = encode(chat_prompt(question))
        self.ids = generate_ids(
            backend, prompt, max_new_tokens, temperature, top_k, seed, stop=stop
        )
        self.ended, self.tokens = False, 0

    def __iter__(self) -> Iterator[str]:
        decoder = StreamDecoder()
        text, shown = "", 0
        for token, _prob in self.ids:
            self.tokens += 1
            text += decoder.push(token)
            end = text.find(END_MARK, max(shown - len(END_MARK), 0))
            if end >= 0:
                self.ended = True
                if end > shown:
                    yield text[shown:end]
                return
            safe = len(text) - _held_back(text)
            if safe > shown:
                yield text[shown:safe]
                shown = safe
        text += decoder.flush()
        if len(text) > shown:
            yield text[shown:]


def stream_answer(backend: Backend, question: str, **options: Any) -> AnswerStream:
    """Answer a question, yielding answer text as it is written (options: `AnswerStream`'s)."""
    return AnswerStream(backend, question, **options)


def chat(backend: Backend, question: str, **options: Any) -> ChatAnswer:
    """The whole answer, stripped, and whether the model closed it with `<|end|>`."""
    stream = AnswerStream(backend, question, **options)
    text = "".join(stream)
    return ChatAnswer(text.strip(), stream.ended, stream.tokens)


def answer(backend: Backend, question: str, **options: Any) -> str:
    """The answer text only (stripped), without the prompt or the end marker."""
    return chat(backend, question, **options).text
