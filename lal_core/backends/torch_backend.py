"""The PyTorch backend: the GPT of `lal_core.model` on CUDA, MPS or CPU.

Fast paths, each with a switch (None picks the measured default for the device; see
`lal_core.precision`):
- dtype: autocast to bfloat16/float16 for training, float32 master weights and AdamW moments
  (float16 with a GradScaler); checkpoints stay float32.
- compile: torch.compile of the training forward; falls back to eager with a one-line warning.
  Compilation runs in `setup_training` and is timed apart (`compile_seconds`). The compiled
  wrapper shares the module's parameters; weights are always saved from the module itself, so
  state-dict names never carry the wrapper's "_orig_mod." prefix.
- fused: fused AdamW kernels where torch has them, else foreach.
- chunked_loss: the head and loss a chunk of rows at a time (CPU, MPS), or plainly with full
  logits (CUDA, where compiled it is 2.2x faster; see `default_chunked_loss`).
- recompute: activation checkpointing, on by default off CUDA where the blocks would keep more
  than RECOMPUTE_ABOVE_BYTES for backward (lal at batch 16; see `default_recompute`).
- infer_dtype: a 16-bit copy of the weights for sampling's one-token steps, which are bound by
  reading the weights; a prompt's forward (compute-bound) uses it only where 16-bit matmuls
  are native, else the float32 weights (see `prompt_dtype`).
- int8_head: in that copy, the head as int8 rows with a scale each (`lal_core/int8_head.py`),
  on by default on a CPU without native bf16, where it makes tiny's generations 1.4x and
  small's 1.2x faster (see `default_int8_head`).
- decode_threads: intra-op threads for sampling (prefill, extend, sample) on the CPU; by
  default the cores no other thread runs on, and one while this process trains
  (`cpu_threads`).
On CUDA also TF32 matmuls, pinned non-blocking host-to-device copies, and flash attention
for sampling (see `_decoding`).
"""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from lal_core.backends.base import Backend
from lal_core.backends.cpu_threads import TRAINING, intra_op_threads, sampling_threads
from lal_core.config import ModelConfig, TrainConfig, activations_need_recompute
from lal_core.device import resolve_device
from lal_core.errors import ConfigError
from lal_core.int8_head import Int8Head, int8_head_works
from lal_core.model import GPT, KVCache, keep_loss_out_of_compile
from lal_core.precision import (
    DTYPES,
    autocast,
    compile_available,
    cpu_has_fast_bf16,
    default_compile,
    resolve_dtype,
)


def default_infer_dtype(device: torch.device) -> str:
    """16-bit weights for sampling's one-token steps: each step reads every weight once and
    does little arithmetic on it, so half the bytes is nearly half the time, whether or not
    16-bit matmuls are native. Measured on a 2-core AVX2 CPU without native bf16 (200 tokens,
    two threads, medians of 5): small float32 63 tokens/s, bfloat16 128, float16 126; tiny
    162, 294, 293. bfloat16 keeps float32's range, so nothing overflows where float16 might."""
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu":
        return "bfloat16"
    return "float32"


def native_16bit_matmuls(device: torch.device, dtype: str) -> bool:
    """Whether matmuls in `dtype` run natively, i.e. at least as fast as float32 when they are
    compute-bound (a prompt's forward). On an AVX2 CPU a 16-bit matmul is converted in software:
    small's 256-token prompt took 723 ms in bfloat16 against 94 ms in float32."""
    if dtype == "float32" or device.type in ("cuda", "mps"):
        return True
    return device.type == "cpu" and dtype == "bfloat16" and cpu_has_fast_bf16()


def default_int8_head(device: torch.device, infer_dtype: str, cfg: ModelConfig) -> bool:
    """The int8 head in bfloat16 sampling copies on a CPU whose bf16 matmuls are emulated.
    There the bf16 head is converted in software, and int8 is both half its bytes and a
    vectorised kernel. Measured on a 2-core AVX2 EPYC (two threads, medians): the head's
    product for one token 0.48 ms against 1.55 in bf16 (tiny), 1.41 against 2.91 (small), 4.26
    against 5.05 (lal); whole generations, the two heads alternating in one process, tiny's
    100 tokens 1.39x and small's 200 tokens 1.22x faster. On a trained tiny (val 5.41) the
    int8 head moved the next-token distributions about as far as bf16 itself does (mean KL
    to float32 3.3e-5 against 3.0e-5). Where bf16 is native (AVX-512 BF16, AMX, GPUs) the
    bf16 head stays: the int8 one is unmeasured there. Int8 blocks as well measured only
    1.02x (tiny) and 1.11x (small) more, so they stay bf16."""
    return (
        device.type == "cpu"
        and infer_dtype == "bfloat16"
        and not cpu_has_fast_bf16()
        and int8_head_works(device, cfg.n_embd, cfg.vocab_size)
    )


def default_chunked_loss(device: torch.device) -> bool:
    """The chunked loss everywhere but CUDA. Measured on an H100 (lal, batch 16, bf16): the
    plain loss inside the compiled graph trained at 371k tokens/s with a 6.0 GB peak, the
    chunked one (kept out of the graph) at 171k with 5.8 GB; eager, plain 189k against 153k.
    On the CPU the chunked loss is the faster (1.8x on tiny, 1.5x on small, 2-core AVX2;
    bench/run.py) and the smaller."""
    return device.type != "cuda"


def default_recompute(device: torch.device, cfg: ModelConfig, batch_size: int) -> bool:
    """Activation checkpointing where the blocks would keep over 4 GiB for backward, off CUDA.
    Measured on a 2-core AVX2 CPU (lal, batch 16, float32, 3 steps, two runs each): peak RSS
    9.6-9.8 GB without, 4.7-4.9 GB with; median step 69 s without, 75 s with (+8%: the
    recompute's extra forward is partly paid back by fewer page faults). On CUDA the GPU's
    own memory holds it (6.0 GB peak on an H100) and the recompute would cost speed there;
    pass recompute=True on a small GPU."""
    if device.type == "cuda":
        return False
    return activations_need_recompute(cfg, batch_size)


# Attention kernels for sampling on CUDA: not cuDNN's, which builds a plan for every new
# sequence length, and the cached length grows by one every token (measured on an H100: 28
# tokens/s for lal's first 200 tokens in a fresh process).
DECODE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def fused_adamw_available(device: torch.device) -> bool:
    """Fused AdamW kernels exist for CUDA, MPS and (torch >= 2.4) CPU."""
    return device.type in ("cuda", "mps", "cpu") and tuple(
        int(v) for v in torch.__version__.split(".")[:2]
    ) >= (2, 4)


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self,
        cfg: ModelConfig,
        seed: int = 1337,
        device: str | None = None,
        dtype: str | None = None,
        compile: bool | None = None,
        fused: bool | None = None,
        infer_dtype: str | None = None,
        decode_threads: int | None = None,
        int8_head: bool | None = None,
        chunked_loss: bool | None = None,
        recompute: bool | None = None,
    ) -> None:
        super().__init__(cfg)
        self.torch_device = resolve_device(device)
        self.device = self.torch_device.type
        self.dtype = resolve_dtype(dtype, self.torch_device)  # training compute type
        self.compile = default_compile(self.torch_device) if compile is None else bool(compile)
        self.fused = fused_adamw_available(self.torch_device) if fused is None else bool(fused)
        self.infer_dtype = (
            default_infer_dtype(self.torch_device)
            if infer_dtype is None
            else resolve_dtype(infer_dtype, self.torch_device)
        )
        # A prompt's forward is compute-bound: 16-bit only where 16-bit matmuls are native.
        self.prompt_dtype = (
            self.infer_dtype
            if native_16bit_matmuls(self.torch_device, self.infer_dtype)
            else "float32"
        )
        # The infer_dtype copy's head in int8 (see `lal_core/int8_head.py`).
        if int8_head is None:
            int8_head = default_int8_head(self.torch_device, self.infer_dtype, cfg)
        elif int8_head and self.infer_dtype != "bfloat16":
            raise ConfigError("the int8 head samples with bfloat16 weights; drop int8_head")
        elif int8_head and not int8_head_works(self.torch_device, cfg.n_embd, cfg.vocab_size):
            raise ConfigError(
                f"this torch's int8 head kernel is missing or wrong for a width-{cfg.n_embd} "
                f"model on {self.device}; sample without the int8 head"
            )
        self.int8_head = bool(int8_head)
        self.compile_seconds: float | None = None  # set by setup_training when compiled
        # CPU: intra-op threads while sampling (None: the free cores, one while training;
        # see `cpu_threads`).
        self.decode_threads = decode_threads
        self._threads = 0  # for this generation, set when it starts (0: torch's setting)
        if self.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls on tensor cores
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(seed)  # the same seed gives the same initial weights
        self.model = GPT(cfg).to(self.torch_device)  # float32 master weights
        self.model.chunked_loss = (
            default_chunked_loss(self.torch_device) if chunked_loss is None else bool(chunked_loss)
        )
        self._recompute_option = recompute  # None: decided in setup_training, by batch size
        self._train_model: torch.nn.Module = self.model  # or its compiled wrapper
        self.optimizer: torch.optim.Optimizer | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._grad_clip = 1.0
        self._generator: torch.Generator | None = None
        self._cache: KVCache | None = None
        self._copies: dict[str, GPT] = {}  # 16-bit sampling copies, dropped when weights change
        self._pinned: dict[tuple, torch.Tensor] = {}
        self._next: torch.Tensor | None = None  # the token fed to `extend`, reused

    # -- the model ---------------------------------------------------------------------------
    @property
    def chunked_loss(self) -> bool:
        """Whether training computes the loss in row chunks (the model holds the switch)."""
        return self.model.chunked_loss

    @property
    def recompute(self) -> bool:
        """Whether training recomputes activations in backward (the model holds the switch)."""
        return self.model.recompute

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        # From the module itself, never the compiled wrapper: canonical names, float32.
        return {
            name: t.detach().to("cpu", torch.float32).numpy().copy()
            for name, t in self.model.state_dict().items()
        }

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()})
        self._copies.clear()

    def _tensor(self, a: np.ndarray, slot: str = "x") -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if self.device != "cuda":
            return t.to(self.torch_device)
        # CUDA: stage in reused page-locked memory so the copy runs asynchronously. A buffer is
        # reused only after the step that used it has synchronised (loss.item()).
        key = (slot, tuple(t.shape), t.dtype)
        if key not in self._pinned:
            if len(self._pinned) > 8:
                self._pinned.clear()
            self._pinned[key] = torch.empty(t.shape, dtype=t.dtype).pin_memory()
        pinned = self._pinned[key]
        pinned.copy_(t)
        return pinned.to(self.torch_device, non_blocking=True)

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        logits, _ = self.model(self._tensor(x))
        self.model.train()
        return logits.float().cpu().numpy()

    def peak_flops(self) -> float | None:
        """The device's default peak FLOP/s for MFU, in the training dtype."""
        from lal_core.flops import default_peak_flops

        return default_peak_flops(self.torch_device, self.dtype)

    def describe(self) -> str:
        """The fast paths in use, for a run's header: `bfloat16, compiled in 52 s, fused AdamW`."""
        compiled = "compiled"
        if self.compile_seconds is not None:
            compiled += f" in {self.compile_seconds:.0f} s"
        parts = [self.dtype, compiled if self.compile else "eager"]
        parts.append("fused AdamW" if self.fused else "foreach AdamW")
        parts.append("chunked loss" if self.chunked_loss else "plain loss")
        if self.recompute:
            parts.append("recomputed activations")
        return ", ".join(parts)

    # -- training ----------------------------------------------------------------------------
    def preparing(self) -> str:
        if self.compile and self._train_model is self.model:
            return (
                f"compiling the model with torch.compile on {self.device}: a one-time wait "
                "of seconds to minutes, timed apart from the steps"
            )
        return ""

    def setup_training(self, train_cfg: TrainConfig) -> None:
        # Weight decay on matrices and embeddings only; biases and LayerNorm gains are exempt.
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": train_cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        betas = (train_cfg.beta1, train_cfg.beta2)
        try:
            kind = {"fused": True} if self.fused else {"foreach": True}
            self.optimizer = torch.optim.AdamW(groups, lr=train_cfg.lr, betas=betas, **kind)
        except RuntimeError:  # no fused kernels for this device in this torch
            self.fused = False
            self.optimizer = torch.optim.AdamW(groups, lr=train_cfg.lr, betas=betas, foreach=True)
        self._params = params
        self._grad_clip = train_cfg.grad_clip
        self.model.recompute = (
            default_recompute(self.torch_device, self.cfg, train_cfg.batch_size)
            if self._recompute_option is None
            else bool(self._recompute_option)
        )
        # float16 overflows where bfloat16 does not: scale the loss so small gradients survive.
        self._scaler = torch.amp.GradScaler(self.device) if self.dtype == "float16" else None
        self.model.train()
        if self.compile and self._train_model is self.model:
            self._compile(train_cfg.batch_size)

    def _compile(self, batch_size: int) -> None:
        """Compile the training forward (and its backward) now, on a dummy batch, so the time
        it takes is reported apart (`compile_seconds`) and not in the first step's."""
        ok, why = compile_available(self.torch_device)
        if not ok:
            warnings.warn(f"torch.compile unavailable ({why}); training eagerly", stacklevel=3)
            self.compile = False
            return
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.torch_device) if self.device == "cuda" else None
        t0 = time.perf_counter()
        try:
            if self.chunked_loss:
                keep_loss_out_of_compile()
            compiled = torch.compile(self.model)
            x = torch.zeros(batch_size, self.cfg.block_size, dtype=torch.long)
            x = x.to(self.torch_device)
            with autocast(self.torch_device, self.dtype):
                _, loss = compiled(x, x)
            loss.backward()
            self._train_model = compiled
            self.compile_seconds = time.perf_counter() - t0
        except Exception as exc:  # no Triton, an old compiler, an unsupported op...
            reason = (str(exc).strip().splitlines() or [""])[0][:120]
            warnings.warn(
                f"torch.compile failed ({type(exc).__name__}: {reason}); training eagerly",
                stacklevel=3,
            )
            self.compile = False
        finally:
            self.model.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)  # the warm-up must not change what training draws
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.torch_device)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        with TRAINING.working():  # sampling in this process meanwhile takes one thread
            return self._train_step(x, y, lr)

    def _train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        assert self.optimizer is not None, "call setup_training first"
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._copies.clear()  # the weights change: a sampling copy would be stale
        with autocast(self.torch_device, self.dtype):
            _, loss = self._train_model(self._tensor(x, "x"), self._tensor(y, "y"))
        self.optimizer.zero_grad(set_to_none=True)
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._params, self._grad_clip)
            # float16: an overflowed gradient is expected now and then; the scaler skips that
            # update and lowers the scale. Only a non-finite loss is a failure.
            self._scaler.step(self.optimizer)
            self._scaler.update()
            return loss.item()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self._params, self._grad_clip)
        if not torch.isfinite(norm):
            # A non-finite gradient would poison the weights: skip the update and report it.
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan")
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def eval_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.eval()
        with TRAINING.working(), autocast(self.torch_device, self.dtype):
            _, loss = self.model(self._tensor(x, "x"), self._tensor(y, "y"))
        self.model.train()
        return loss.item()

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's moments and step count by parameter name, the RNG state (for dropout) and,
        with float16, the GradScaler's loss scale."""
        assert self.optimizer is not None, "call setup_training first"
        out: dict[str, np.ndarray] = {"rng.torch": torch.get_rng_state().numpy().copy()}
        if self.torch_device.type == "cuda":
            out["rng.cuda"] = torch.cuda.get_rng_state(self.torch_device).numpy().copy()
        if self._scaler is not None:  # float16: the loss scale it has settled on
            scaler = self._scaler.state_dict()
            out["scaler.scale"] = np.array([scaler["scale"]], dtype=np.float64)
            out["scaler.growth_tracker"] = np.array([scaler["_growth_tracker"]], dtype=np.float64)
        for name, p in self.model.named_parameters():
            state = self.optimizer.state.get(p)
            if not state:
                continue
            out["step"] = np.array([float(state["step"])], dtype=np.float64)
            out[f"m.{name}"] = state["exp_avg"].detach().cpu().numpy().copy()
            out[f"v.{name}"] = state["exp_avg_sq"].detach().cpu().numpy().copy()
        return out

    def load_optimizer_state(self, tensors: dict[str, np.ndarray]) -> None:
        assert self.optimizer is not None, "call setup_training first"
        torch.set_rng_state(torch.from_numpy(tensors["rng.torch"].copy()))
        if "rng.cuda" in tensors and self.torch_device.type == "cuda":
            torch.cuda.set_rng_state(
                torch.from_numpy(tensors["rng.cuda"].copy()), self.torch_device
            )
        if self._scaler is not None and "scaler.scale" in tensors:
            scaler = self._scaler.state_dict()
            scaler["scale"] = float(tensors["scaler.scale"][0])
            scaler["_growth_tracker"] = int(tensors["scaler.growth_tracker"][0])
            self._scaler.load_state_dict(scaler)
        if "step" not in tensors:
            return  # saved before the first step: the optimizer has no state yet
        step = float(tensors["step"][0])

        def step_device(p: torch.Tensor) -> torch.device:
            return p.device if self.fused else torch.device("cpu")

        for name, p in self.model.named_parameters():
            self.optimizer.state[p] = {
                # Fused AdamW keeps its step count on the parameters' device.
                "step": torch.tensor(step, dtype=torch.float32, device=step_device(p)),
                "exp_avg": torch.from_numpy(tensors[f"m.{name}"].copy()).to(p.device),
                "exp_avg_sq": torch.from_numpy(tensors[f"v.{name}"].copy()).to(p.device),
            }

    # -- sampling ----------------------------------------------------------------------------
    def _decoding(self):
        """The context every sampling computation runs in: on the CPU few intra-op threads
        (`intra_op_threads`), on CUDA the attention kernels of DECODE_ATTENTION."""
        if self.device == "cuda":
            return sdpa_kernel(DECODE_ATTENTION)
        if self.decode_threads is not None:
            return intra_op_threads(self.decode_threads)
        return intra_op_threads(1 if TRAINING.busy() else self._threads)

    def _sampling_model(self, dtype: str) -> GPT:
        """The weights in `dtype`: the float32 module itself, or a copy kept until the weights
        change (with the int8 head, for `infer_dtype`, where `int8_head` is on). A prompt and
        the tokens after it may use different copies (`prompt_dtype`); the KV cache is in
        `infer_dtype` either way."""
        if dtype == "float32":
            return self.model
        if dtype not in self._copies:
            # deepcopy takes each parameter's cast copy from the memo instead of copying its
            # float32 data first: one pass over the weights (part of the first token's wait).
            cast = {
                id(p): torch.nn.Parameter(p.detach().to(DTYPES[dtype]), requires_grad=False)
                for p in self.model.parameters()
            }
            model = copy.deepcopy(self.model, cast).eval()
            if self.int8_head and dtype == self.infer_dtype:
                # An instance attribute shadows the GPT.head method: this copy's logits come
                # from int8 rows, quantised from the float32 weights.
                model.head = Int8Head(self.model.wte.weight, DTYPES[dtype])
            self._copies[dtype] = model
        return self._copies[dtype]

    def start_generation(self, seed: int | None) -> None:
        self._generator = torch.Generator(device=self.torch_device)
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self.model.eval()
        if self.device == "cpu" and self.decode_threads is None:
            self._threads = sampling_threads()

    @torch.inference_mode()
    def prefill(self, tokens: list[int], use_cache: bool = True) -> torch.Tensor:
        model = self._sampling_model(self.prompt_dtype)
        idx = torch.tensor([tokens], dtype=torch.long, device=self.torch_device)  # (1, T)
        dtype = DTYPES[self.infer_dtype]
        self._cache = KVCache(self.cfg, 1, self.torch_device, dtype) if use_cache else None
        with self._decoding():
            logits, _ = model(idx, cache=self._cache, last_only=True)  # (1, 1, V): head once
        return logits[0, -1]  # (V,)

    @torch.inference_mode()
    def extend(self, token: int) -> torch.Tensor:
        assert self._cache is not None, "prefill with use_cache first"
        if self._next is None:
            self._next = torch.zeros((1, 1), dtype=torch.long, device=self.torch_device)
        self._next.fill_(token)  # (1, 1), reused: no new tensor or host copy per token
        with self._decoding():
            logits, _ = self._sampling_model(self.infer_dtype)(self._next, cache=self._cache)
        return logits[0, -1]  # (V,)

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor, temperature: float, top_k: int | None):
        with self._decoding():
            return self._sample(logits, temperature, top_k)

    def _sample(self, logits: torch.Tensor, temperature: float, top_k: int | None):
        if temperature == 0:
            token = int(torch.argmax(logits))
            return token, float(torch.softmax(logits.float(), dim=-1)[token])
        if top_k is not None and top_k < logits.numel():
            # Softmax over the k largest only: the others would get probability 0 anyway, and
            # k values are cheaper to scale, normalise and draw from than 50,257. The k are
            # picked in the logits' own dtype: converting all of them first doubled the time
            # (a 16-bit head's logits: 235 us against 97 on a 2-core AVX2 CPU).
            values, ids = torch.topk(logits, top_k)
            probs = torch.softmax(values.float() / temperature, dim=-1)
            j = int(torch.multinomial(probs, 1, generator=self._generator))
            return int(ids[j]), float(probs[j])
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        token = int(torch.multinomial(probs, 1, generator=self._generator))
        return token, float(probs[token])
