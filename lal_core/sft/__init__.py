"""Supervised fine-tuning (SFT): turn a base checkpoint into a (very small) chat assistant.

chat_format  the chat format, the question-answer pairs, masked batches
tune         the fine-tune itself (`run_sft`, `fine_tune`), through the one step loop
chat         answering a question, stopping at the end marker
(the same questions before and after a fine-tune: the chat mode of `lal_core.quality.report`)
"""

from lal_core.sft.chat import ChatAnswer, answer, chat, stream_answer
from lal_core.sft.chat_format import (
    ASSISTANT_MARK,
    BUILTIN_PAIRS_PATH,
    BUILTIN_REPEAT,
    DEFAULT_SEED,
    END_MARK,
    HELD_OUT_QUESTION,
    HELD_OUT_QUESTIONS,
    PAD_TOKEN,
    SYSTEM_LINE,
    SYSTEM_MARK,
    USER_MARK,
    Example,
    QAPair,
    SFTWarning,
    builtin_pairs,
    chat_answer,
    chat_prompt,
    load_pairs,
    make_batch,
    make_example,
    make_examples,
    token_mask,
)
from lal_core.sft.tune import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    FineTuning,
    SFTResult,
    SFTSettings,
    fine_tune,
    run_sft,
)

__all__ = [
    "ASSISTANT_MARK",
    "BUILTIN_PAIRS_PATH",
    "BUILTIN_REPEAT",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_LR",
    "DEFAULT_SEED",
    "END_MARK",
    "HELD_OUT_QUESTION",
    "HELD_OUT_QUESTIONS",
    "PAD_TOKEN",
    "SYSTEM_LINE",
    "SYSTEM_MARK",
    "USER_MARK",
    "ChatAnswer",
    "Example",
    "FineTuning",
    "QAPair",
    "SFTResult",
    "SFTSettings",
    "SFTWarning",
    "answer",
    "builtin_pairs",
    "chat",
    "chat_answer",
    "chat_prompt",
    "fine_tune",
    "load_pairs",
    "make_batch",
    "make_example",
    "make_examples",
    "run_sft",
    "stream_answer",
    "token_mask",
]
