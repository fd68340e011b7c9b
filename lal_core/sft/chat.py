"""Chat generation: answer a question in the chat format and stop at the end marker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lal_core.backends import Backend
from lal_core.errors import ConfigError
from lal_core.events import StopRequest
from lal_core.sampling import check_sampling_args, generate_ids
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


def _answer_pieces(
    backend: Backend,
    question: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int | None,
    stop: StopRequest | None,
    state: dict[str, Any],
) -> Iterator[str]:
    check_sampling_args(temperature, top_k, max_new_tokens)
    if not question.strip():
        raise ConfigError("the question is empty")
    decoder = StreamDecoder()
    text, shown = "", 0
    state.update(ended=False, tokens=0)
    ids = generate_ids(
        backend, encode(chat_prompt(question)), max_new_tokens, temperature, top_k, seed, stop=stop
    )
    for token, _prob in ids:
        state["tokens"] += 1
        text += decoder.push(token)
        end = text.find(END_MARK, max(shown - len(END_MARK), 0))
        if end >= 0:
            state["ended"] = True
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


def stream_answer(
    backend: Backend,
    question: str,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = None,
    stop: StopRequest | None = None,
) -> Iterator[str]:
    """Answer a question in the chat format, yielding answer text as it is written.

    Generation stops when the text contains `<|end|>` (found in the decoded text: the marker
    is several tokens) or at max_new_tokens; the marker itself is never yielded (text that
    might be its beginning is held back until it is clearly not).
    """
    yield from _answer_pieces(backend, question, max_new_tokens, temperature, top_k, seed, stop, {})


def chat(
    backend: Backend,
    question: str,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = None,
    stop: StopRequest | None = None,
) -> ChatAnswer:
    """The whole answer, and whether the model closed it with `<|end|>`."""
    state: dict[str, Any] = {}
    pieces = _answer_pieces(
        backend, question, max_new_tokens, temperature, top_k, seed, stop, state
    )
    text = "".join(pieces)
    return ChatAnswer(text.strip(), state["ended"], state["tokens"])


def answer(
    backend: Backend,
    question: str,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = None,
) -> str:
    """The answer text only (stripped), without the prompt or the end marker."""
    return chat(backend, question, max_new_tokens, temperature, top_k, seed).text
