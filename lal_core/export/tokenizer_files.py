"""The GPT-2 tokenizer files (`vocab.json`, `merges.txt`) of r50k_base, from tiktoken's own file.

r50k_base is GPT-2's BPE: tiktoken stores it as token bytes -> rank, Hugging Face as GPT-2's
original pair of files. Both describe the same thing:

- vocab.json maps each token to its id, the token's bytes written as printable characters by
  GPT-2's `bytes_to_unicode` table (a space is "Ġ", a newline "Ċ");
- merges.txt lists the merges in the order BPE applies them. In r50k_base the token of rank
  256 + i is made by merge i, and its two halves are what BPE itself gives for that token's
  bytes when it may use only the merges before it (transformers' `TikTokenConverter` recovers
  merges the same way; the tests check the result against transformers' tokenizer).

Nothing is downloaded: the ranks come from the tokenizer lal already uses.
"""

from __future__ import annotations

import functools

from lal_core.data.tokenizer import EOT_TOKEN, get_tokenizer

EOT_TEXT = "<|endoftext|>"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte to a printable character: printable Latin-1 bytes stand for
    themselves, the other 68 (control characters, space, ...) take the characters from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _as_text(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def _halves(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The two parts BPE joins last to make `token`: merge its bytes, lowest rank first, using
    only the merges ranked below the token's own."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        pairs = [(ranks.get(parts[i] + parts[i + 1], limit), i) for i in range(len(parts) - 1)]
        rank, i = min(pairs)
        if rank >= limit:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} is not one merge of two earlier tokens")
    return parts[0], parts[1]


def gpt2_tokenizer_files() -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) for vocab.json and merges.txt (without its version line)."""
    encoding = get_tokenizer()
    ranks = {encoding.decode_single_token_bytes(i): i for i in range(EOT_TOKEN)}
    vocab = {_as_text(token): rank for token, rank in ranks.items()}
    vocab[EOT_TEXT] = EOT_TOKEN
    by_rank = sorted((rank, token) for token, rank in ranks.items() if len(token) > 1)
    merges = []
    for _, token in by_rank:
        first, second = _halves(ranks, token)
        merges.append(f"{_as_text(first)} {_as_text(second)}")
    return vocab, merges
