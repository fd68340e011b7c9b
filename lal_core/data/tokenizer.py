"""The GPT-2 BPE (tiktoken's r50k_base), and UTF-8-safe streaming decode.

A BPE token is a run of bytes, not a character: "é" or an emoji can be split across two tokens.
`StreamDecoder` holds such partial bytes back until the character is complete, so a stream of
tokens never shows U+FFFD halfway through a character.
"""

from __future__ import annotations

import codecs
import contextlib
import functools

import numpy as np
import tiktoken

from lal_core.errors import TokenizerError

ENCODING_NAME = "r50k_base"
EOT_TOKEN = 50256  # <|endoftext|>


@functools.cache
def get_tokenizer() -> tiktoken.Encoding:
    """The r50k_base encoding; offline it needs TIKTOKEN_CACHE_DIR to hold the cached file."""
    try:
        return tiktoken.get_encoding(ENCODING_NAME)
    except Exception as exc:  # tiktoken raises requests/OS/value errors, depending on the cause
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TokenizerError(
            f"could not load the {ENCODING_NAME} tokenizer ({reason[:120]}); "
            "connect to the internet once, or set TIKTOKEN_CACHE_DIR to a folder "
            "that holds tiktoken's cached r50k_base file"
        ) from None


def encode(text: str) -> list[int]:
    """Token ids for `text`; special-token strings are treated as plain text."""
    return get_tokenizer().encode_ordinary(text)


def encode_array(text: str) -> np.ndarray:
    """`encode(text)` as a uint16 array, from tiktoken's own buffer: no list of Python ints
    in between (with it, 4.5 MB took 1.27-1.37x as long; bench/README.md)."""
    encoding = get_tokenizer()
    try:  # with no special token allowed or refused, this is encode_ordinary's BPE
        tokens = encoding.encode_to_numpy(text, disallowed_special=())
    except UnicodeEncodeError:  # lone surrogates (JSON's "\ud800"): encode_ordinary mends them
        return np.asarray(encoding.encode_ordinary(text), dtype=np.uint16)
    return tokens.astype(np.uint16)


def decode(tokens: list[int]) -> str:
    return get_tokenizer().decode(tokens)


@functools.cache
def token_byte_lengths() -> np.ndarray:
    """The UTF-8 bytes each token id stands for, (vocabulary,) int64: how many bytes of text a
    stretch of tokens holds, without decoding it (bits per byte)."""
    encoding = get_tokenizer()
    lengths = np.zeros(encoding.n_vocab, dtype=np.int64)
    for token in range(encoding.n_vocab):
        with contextlib.suppress(KeyError):  # an id the encoding leaves unused
            lengths[token] = len(encoding.decode_single_token_bytes(token))
    return lengths


class StreamDecoder:
    """Turns token ids into text one token at a time, holding back incomplete characters."""

    def __init__(self) -> None:
        self._encoding = get_tokenizer()
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        """The text that became complete with this token ('' while a character is split)."""
        return self._utf8.decode(self._encoding.decode_single_token_bytes(token))

    def flush(self) -> str:
        """Whatever is left at the end of the stream (an unfinished character shows as U+FFFD)."""
        return self._utf8.decode(b"", final=True)

    def token_bytes(self, token: int) -> bytes:
        return self._encoding.decode_single_token_bytes(token)
