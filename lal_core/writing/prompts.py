"""Prompts from the val split, and the held-out text that follows them: what `lal report` and a
run's eval samples draw from, and the baseline their figures are set beside.

A prompt is the first PROMPT_TOKENS tokens of a paragraph (after a blank line), the paragraphs
spread evenly over the split, so that every eval or column starts from the same places.
"""

from __future__ import annotations

import numpy as np

from lal_core.data.tokenizer import encode
from lal_core.errors import ConfigError

PROMPT_TOKENS = 8


def paragraph_starts(val: np.ndarray, count: int, room: int) -> list[int]:
    """`count` positions spread evenly over val, each moved to the start of the next paragraph
    (after a blank line) when one comes soon, with `room` tokens after each."""
    last = len(val) - room
    if last < 0 or count < 1:
        raise ConfigError(
            f"the val split has {len(val):,} tokens, fewer than a prompt and a sample need "
            f"({room:,}); ask for fewer --tokens"
        )
    newline, blank_line = encode("\n")[0], encode("\n\n")[0]  # BPE writes a blank line both ways
    starts = []
    for p in np.linspace(0, last, count, endpoint=False).astype(int):
        # Only the stretch searched is read: a val split of gigabytes is never copied whole.
        before = min(int(p), 2)
        v = np.asarray(val[p - before : min(p + 2_000, last)], dtype=np.int64)
        blank = np.zeros(len(v), dtype=bool)  # blank[i]: a blank line ends just before v[i]
        blank[1:] = v[:-1] == blank_line
        blank[2:] |= (v[:-2] == newline) & (v[1:-1] == newline)
        blank &= (v != newline) & (v != blank_line)
        ahead = np.flatnonzero(blank[before:])
        starts.append(int(p + ahead[0]) if len(ahead) else int(p))
    return starts


def text_prompts(
    val: np.ndarray, count: int, samples: int, tokens: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts from the val split, and held-out text to set beside their samples: `samples`
    stretches of `tokens` tokens per prompt, those that follow it where the split is long enough
    (else spread over it, overlapping)."""
    if len(val) < count * (PROMPT_TOKENS + samples * tokens):
        starts = paragraph_starts(val, count, PROMPT_TOKENS + tokens)
        prompts = [val[s : s + PROMPT_TOKENS].tolist() for s in starts]
        return prompts, held_out_text(val, count * samples, tokens)
    starts = paragraph_starts(val, count, PROMPT_TOKENS + samples * tokens)
    prompts, baseline = [], []
    for s in starts:
        prompts.append(val[s : s + PROMPT_TOKENS].tolist())
        after = s + PROMPT_TOKENS
        baseline += [
            val[after + j * tokens : after + (j + 1) * tokens].tolist() for j in range(samples)
        ]
    return prompts, baseline


def held_out_text(val: np.ndarray, count: int, tokens: int) -> list[list[int]]:
    """`count` stretches of `tokens` tokens of the val split, spread evenly: the baseline for
    prompts that do not come from it."""
    starts = paragraph_starts(val, count, tokens)
    return [val[s : s + tokens].tolist() for s in starts]
