"""Sampling on the PyTorch backend: weights for decoding, the KV cache, the candidates a token
is drawn from (the draw itself is `lal_core.generation.sampling`'s, the same for every backend).

A one-token step reads every weight once and does little arithmetic on it, so it runs on a
16-bit copy of the weights (`infer_dtype`); on a CPU it reads the head as int8 rows instead
(`Int8Head`), and runs without oneDNN (`without_onednn`).
A prompt's forward is compute-bound: it uses the 16-bit copy only where 16-bit matmuls are
native (`prompt_dtype`), else the float32 weights. Each is a `DecodeWeights`: a model and the
head its logits come from. The model is `lal_core.model.gpt.GPT`, unchanged; only the last
position's logits are computed. Measurements behind these choices: bench/README.md.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from lal_core.backends.base import Candidates
from lal_core.backends.torch.cpu_threads import TRAINING, intra_op_threads, sampling_threads
from lal_core.backends.torch.int8_head import Int8Head, int8_head_works
from lal_core.backends.torch.precision import DTYPES
from lal_core.model.config import ModelConfig
from lal_core.model.gpt import GPT, KVCache

# Attention kernels for sampling on CUDA: not cuDNN's, which builds a plan for every new
# sequence length, and the cached length grows by one every token.
DECODE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass(frozen=True)
class DecodeWeights:
    """A model to sample with and the head its logits come from (its own, or an int8 copy)."""

    model: GPT
    head: Callable[[torch.Tensor], torch.Tensor]

    def last_logits(self, idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """The logits (B, V) after the last of idx's positions: the head runs on that one only."""
        x = self.model.hidden_states(idx, cache)  # (B, T, C)
        return self.head(x[:, -1])  # (B, V)


def without_onednn() -> contextlib.AbstractContextManager:
    """torch's matmuls without oneDNN: its bf16 matrix-vector products cost some 30 us each
    above their work (AMX Xeon, 2 threads: 38 us for tiny's 128 x 384, where torch's own kernel
    takes 12), and a one-token step has 4 per layer. The flag is the process's: a one-token
    step is short, and nothing else in a sampling process runs matmuls meanwhile."""
    return torch.backends.mkldnn.flags(
        enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None
    )


def sixteen_bit_copy(model: GPT, dtype: torch.dtype) -> GPT:
    """The model with its weights cast to `dtype`, for inference."""
    # deepcopy takes each parameter's cast copy from the memo instead of copying its float32
    # data first: one pass over the weights (part of the first token's wait).
    cast = {
        id(p): torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
        for p in model.parameters()
    }
    return copy.deepcopy(model, cast).eval()


class TorchSampler:
    """The sampling half of the PyTorch backend (`TorchBackend` hands its methods here)."""

    def __init__(
        self,
        model: GPT,
        cfg: ModelConfig,
        device: torch.device,
        infer_dtype: str,
        prompt_dtype: str,
        int8_head: bool,
        threads: int | None,
    ) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.infer_dtype, self.prompt_dtype, self.int8_head = infer_dtype, prompt_dtype, int8_head
        self.threads = threads  # CPU intra-op threads (None: the free cores, one while training)
        self._threads = 0  # for this generation, set when it starts (0: torch's setting)
        self._weights: dict[str, DecodeWeights] = {}  # by dtype, dropped when the weights change
        self.rows = 1  # sequences in this generation
        self._cache: KVCache | None = None
        self._seen: torch.Tensor | None = None  # (rows, V) bool: tokens in each row's context
        self._next: torch.Tensor | None = None  # the tokens fed to `extend`, reused

    def weights_changed(self) -> None:
        self._weights.clear()

    def ready(self) -> None:
        """The prompt's and the one-token steps' weights made now (the copies `weights` keeps
        until the weights change): they were most of a first token's wait. Then a one-token
        prompt and step, so that a generation's first step does not pay for each op's first
        call (tiny: 6.5 ms against 1.2 for later steps)."""
        with torch.inference_mode():
            self.weights(self.prompt_dtype)
            self.weights(self.infer_dtype)
        self.start(1)
        self.prefill(np.zeros((1, 1), dtype=np.int64))
        self.extend(np.zeros(1, dtype=np.int64))
        self._cache = self._next = None

    def weights(self, dtype: str) -> DecodeWeights:
        """The weights in `dtype`: the float32 module itself, or a copy kept until the weights
        change (with the int8 head, for `infer_dtype`, where `int8_head` is on)."""
        if dtype == "float32":
            return DecodeWeights(self.model, self.model.head)
        if dtype not in self._weights:
            model = sixteen_bit_copy(self.model, DTYPES[dtype])
            head = model.head
            if self.int8_head and dtype == self.infer_dtype:
                head = Int8Head(self.model.wte.weight, DTYPES[dtype])  # from the float32 weights
            self._weights[dtype] = DecodeWeights(model, head)
        return self._weights[dtype]

    def _context(self, one_token: bool = False) -> contextlib.AbstractContextManager:
        """Where every sampling computation runs: on the CPU few intra-op threads (and a
        one-token step without oneDNN), on CUDA the attention kernels of DECODE_ATTENTION."""
        if self.device.type == "cuda":
            return sdpa_kernel(DECODE_ATTENTION)
        threads = self.threads
        if threads is None:
            threads = 1 if TRAINING.busy() else self._threads
        context = contextlib.ExitStack()
        context.enter_context(intra_op_threads(threads))
        if one_token:
            context.enter_context(without_onednn())
        return context

    def start(self, rows: int) -> None:
        self.rows = rows
        self._seen = None
        self._next = None
        self.model.eval()
        if self.device.type == "cpu" and self.threads is None:
            self._threads = sampling_threads()

    @torch.inference_mode()
    def prefill(self, contexts: np.ndarray, use_cache: bool = True) -> torch.Tensor:
        idx = torch.as_tensor(contexts, dtype=torch.long, device=self.device)  # (1 or rows, T)
        dtype = DTYPES[self.infer_dtype]  # the cache's, whichever weights run the prompt
        # A context shared by every row (1, T) runs once: writing its keys and values into the
        # cache broadcasts them to every row, and its logits are every row's.
        self._cache = KVCache(self.cfg, self.rows, self.device, dtype) if use_cache else None
        with self._context():
            logits = self.weights(self.prompt_dtype).last_logits(idx, self._cache)  # (.., V)
        return logits.expand(self.rows, -1)  # (rows, V)

    @torch.inference_mode()
    def extend(self, tokens: np.ndarray) -> torch.Tensor:
        assert self._cache is not None, "prefill with use_cache first"
        if self._next is None:
            self._next = torch.zeros((self.rows, 1), dtype=torch.long, device=self.device)
        self._next.copy_(torch.from_numpy(tokens).view(-1, 1))  # (rows, 1), reused
        with self._context(one_token=True):
            return self._decode_weights().last_logits(self._next, self._cache)

    def _decode_weights(self) -> DecodeWeights:
        """The weights for one-token steps; the int8 head only where its kernel has been
        checked at this many rows (it is a private op: see `int8_head_works`)."""
        weights = self.weights(self.infer_dtype)
        C, V = self.cfg.n_embd, self.cfg.vocab_size
        if isinstance(weights.head, Int8Head) and not int8_head_works(self.device, C, V, self.rows):
            return DecodeWeights(weights.model, weights.model.head)
        return weights

    @torch.inference_mode()
    def see(self, tokens: np.ndarray) -> None:
        if self._seen is None:
            self._seen = torch.zeros(
                (self.rows, self.cfg.vocab_size), dtype=torch.bool, device=self.device
            )
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.device)  # (rows, n)
        self._seen.scatter_(1, ids, True)

    @torch.inference_mode()
    def candidates(
        self, logits: torch.Tensor, top_k: int | None, repetition_penalty: float, with_lse: bool
    ) -> Candidates:
        with self._context():
            if repetition_penalty != 1:
                assert self._seen is not None, "see the context's tokens first"
                logits = logits.float()
                lowered = torch.where(
                    logits > 0, logits / repetition_penalty, logits * repetition_penalty
                )
                logits = torch.where(self._seen, lowered, logits)
            lse = None
            if with_lse:
                # One thread: split over two, the float32 sum over the vocabulary rounds
                # otherwise, and the threads a generation gets follow the machine's load.
                with intra_op_threads(1):
                    lse = torch.logsumexp(logits.float(), dim=-1).cpu().numpy()
            if top_k is None or top_k >= logits.shape[-1]:
                return Candidates(logits.float().cpu().numpy(), None, lse)
            # The k are picked in the logits' own dtype (converting all of them first doubled
            # the time): only k values per row cross to the host.
            values, ids = torch.topk(logits, top_k)  # (rows, k)
            return Candidates(values.float().cpu().numpy(), ids.cpu().numpy(), lse)
