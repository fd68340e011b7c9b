"""Sampling controls: what shapes the distribution each token is drawn from, and when a sample
ends. One frozen value, checked once, shared by every front end (`lal sample`, `lal chat`,
`lal report`, the dashboard) and the same on every backend.

    repetition_penalty  before anything else, the logit of every token already in the context
                        (the prompt and the sample so far) moves towards "less likely": divided
                        by the penalty where positive, multiplied where negative. The rule of
                        CTRL (Keskar et al., 2019) and of Hugging Face's `repetition_penalty`,
                        so a value found here means the same in an exported model's
                        generation_config. 1 is off.
    temperature         the logits are divided by it; 0 picks the most likely token (greedy).
    top_k               only the k most likely tokens can be drawn (None: all of them).
    top_p               then only the smallest set of those whose probabilities add up to p
                        (nucleus sampling, Holtzman et al., 2019). 1 is off.
    stop                a sample ends where one of these strings would begin; it is not shown.
    max_time            seconds a generation may take, all its samples together (None: no limit).

Why a repetition penalty and not frequency/presence penalties (the additive ones of OpenAI's
API): the loops this project's small models fall into ("a man of a man") repeat a few tokens,
once is enough to count, and a multiplicative rule needs no tuning against the logits' scale. A
frequency penalty also grows with each use, which in a long sample punishes the newlines and
commas that verse must repeat.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from lal_core.errors import ConfigError

# The defaults every front end starts from: a speaker's name starts the text the way the corpus
# does; temperature 1 and top-k 50 are the original write-up's sampler (docs/recipe.md,
# Sampling), chosen again with `lal report` on small's best checkpoint: of the temperatures,
# top-p and repetition penalties tried, the closest to held-out text (repeated 4-grams,
# memorised 8-grams, distinct-2) with no more invented words than 0.8's beyond noise. The
# default before, 0.8, repeated 4-grams almost twice as often as held-out text (README.md,
# Sampling).
DEFAULT_PROMPT = "ROMEO:"
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 50
DEFAULT_TOKENS = 200


@dataclass(frozen=True)
class Controls:
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int | None = DEFAULT_TOP_K
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    max_time: float | None = None

    def check(self) -> Controls:
        """Itself, once every value is one the sampler can use; else a one-line ConfigError."""
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top-k must be at least 1, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p must be more than 0 and at most 1, got {self.top_p}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty >= 1):
            raise ConfigError(
                f"repetition penalty must be 1 (off) or more, got {self.repetition_penalty}"
            )
        if any(s == "" for s in self.stop):
            raise ConfigError("a stop string is empty; give at least one character")
        if self.max_time is not None and not self.max_time > 0:
            raise ConfigError(f"max-time must be more than 0 seconds, got {self.max_time}")
        return self

    def describe(self) -> str:
        """The settings that differ from plain sampling, for people: `temperature 0.8, top-k
        50, top-p 0.9, repetition penalty 1.3`."""
        parts = ["greedy" if self.temperature == 0 else f"temperature {self.temperature:g}"]
        if self.temperature > 0:
            parts.append("all tokens" if self.top_k is None else f"top-k {self.top_k}")
            if self.top_p < 1:
                parts.append(f"top-p {self.top_p:g}")
        if self.repetition_penalty != 1:
            parts.append(f"repetition penalty {self.repetition_penalty:g}")
        if self.stop:
            parts.append("stop at " + " ".join(repr(s) for s in self.stop))
        if self.max_time is not None:
            parts.append(f"max {self.max_time:g} s")
        return ", ".join(parts)

    def with_settings(self, text: str) -> Controls:
        """These controls with `name=value` changes, comma-separated (`top_p=0.9,
        repetition_penalty=1.3`; `top_k=none` for no limit); checked. Stop strings are not
        settings here (they may hold any character)."""
        changes: dict[str, object] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, eq, value = item.partition("=")
            field = name.strip().replace("-", "_")
            if not eq or field not in SETTINGS:
                known = ", ".join(SETTINGS)
                raise ConfigError(
                    f"unknown sampling setting {item!r}; use name=value with: {known}"
                )
            changes[field] = _parse(field, value.strip())
        return dataclasses.replace(self, **changes).check()


# What `with_settings` can change: stop strings hold any character (commas, `=`), so they come
# from their own flag (`--stop`).
SETTINGS = tuple(f.name for f in dataclasses.fields(Controls) if f.name != "stop")


def _parse(field: str, value: str) -> object:
    if value.lower() == "none" and field in ("top_k", "max_time"):
        return None
    try:
        return int(value) if field == "top_k" else float(value)
    except ValueError:
        raise ConfigError(f"sampling setting {field} needs a number, got {value!r}") from None
