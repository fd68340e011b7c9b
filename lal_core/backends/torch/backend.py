"""The PyTorch backend: the GPT of `lal_core.model.gpt` on CUDA, MPS or CPU.

Fast paths, each with a switch (None picks the device's default: `precision`; the
measurements behind each default are in bench/README.md):
- dtype: autocast to bfloat16/float16 for training, float32 master weights and AdamW moments
  (float16 with a GradScaler); checkpoints stay float32.
- compile: torch.compile of the training loss (and its backward), run in `setup_training` and
  timed apart (`compile_seconds`); falls back to eager with a one-line warning. Weights are
  always read from the module itself, so state-dict names never carry a wrapper's prefix.
- fused: fused AdamW kernels where torch has them, else foreach.
- chunked_loss, recompute: how the training loss is computed (`training_loss`).
- infer_dtype, int8_head, decode_threads: sampling (`sampler`).
Eager on a CPU, dropout draws its masks 16 bits at a time (`cpu_dropout`). On CUDA also TF32
matmuls and pinned, non-blocking host-to-device copies.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from dataclasses import replace

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lal_core.backends.base import Backend, passes
from lal_core.backends.distributed import lost_rank_is_said
from lal_core.backends.torch.chunked_loss import linear_cross_entropy
from lal_core.backends.torch.cpu_memory import keep_freed_memory
from lal_core.backends.torch.cpu_threads import TRAINING
from lal_core.backends.torch.device import Staging, resolve_device
from lal_core.backends.torch.int8_head import int8_head_works
from lal_core.backends.torch.precision import (
    autocast,
    compile_available,
    default_chunked_loss,
    default_compile,
    default_infer_dtype,
    default_int8_head,
    default_recompute,
    fused_adamw_available,
    native_16bit_matmuls,
    resolve_dtype,
)
from lal_core.backends.torch.sampler import TorchSampler
from lal_core.backends.torch.training_loss import TrainingLoss
from lal_core.errors import ConfigError
from lal_core.model.config import ModelConfig
from lal_core.model.gpt import GPT
from lal_core.model.recipe import TrainConfig


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
        self.torch_device = dev = resolve_device(device)
        self.device = dev.type
        self.dtype = resolve_dtype(dtype, dev)  # training compute type
        self.compile = default_compile(dev) if compile is None else bool(compile)
        self.fused = fused_adamw_available(dev) if fused is None else bool(fused)
        self.chunked_loss = default_chunked_loss(dev) if chunked_loss is None else chunked_loss
        self._recompute_option = recompute  # None: decided in setup_training, by batch size
        self.recompute = bool(recompute)
        # Dropout's masks by `cpu_dropout`, eager on a CPU (a compile that fails later keeps
        # torch's masks).
        self.cpu_dropout = self.device == "cpu" and not self.compile and cfg.dropout > 0
        self.compile_seconds: float | None = None  # set by setup_training when compiled
        self._micro = 0  # sequences per forward pass, set by setup_training
        self._grad_clip, self._label_smoothing = 1.0, 0.0  # the recipe's, set by setup_training
        self._ddp: torch.nn.Module | None = None  # the loss under DDP, on several ranks
        if self.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls on tensor cores
            torch.backends.cudnn.allow_tf32 = True
        self._seed = seed
        torch.manual_seed(seed)  # the same seed gives the same initial weights
        self.model = GPT(cfg).to(dev)  # float32 master weights
        self._use_loss()
        self.optimizer: torch.optim.Optimizer | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._tensor = Staging(dev)  # batches onto the device
        self._average: AveragedModel | None = None  # the weights' moving average, if kept
        self.sampler = self._make_sampler(infer_dtype, int8_head, decode_threads)

    def _use_loss(self) -> None:
        """The training loss for the current switches (chunked, recompute); `_compile` may
        replace `_train_loss` with its compiled form."""
        self.loss = TrainingLoss(self.chunked_loss, self.recompute, cpu_dropout=self.cpu_dropout)
        training = replace(self.loss, label_smoothing=self._label_smoothing)  # evals: unsmoothed
        self._train_loss = functools.partial(training, self.model)

    def _make_sampler(
        self, infer_dtype: str | None, int8_head: bool | None, threads: int | None
    ) -> TorchSampler:
        dev = self.torch_device
        infer = default_infer_dtype(dev) if infer_dtype is None else resolve_dtype(infer_dtype, dev)
        # A prompt's forward is compute-bound: 16-bit only where 16-bit matmuls are native.
        prompt = infer if native_16bit_matmuls(dev, infer) else "float32"
        if int8_head is None:
            int8_head = default_int8_head(dev, infer, self.cfg)
        elif int8_head and infer != "bfloat16":
            raise ConfigError("the int8 head samples with bfloat16 weights; drop int8_head")
        elif int8_head and not int8_head_works(dev, self.cfg.n_embd, self.cfg.vocab_size):
            raise ConfigError(
                f"this torch's int8 head kernel is missing or wrong for a width-{self.cfg.n_embd} "
                f"model on {self.device}; sample without the int8 head"
            )
        return TorchSampler(self.model, self.cfg, dev, infer, prompt, bool(int8_head), threads)

    def ready_for_sampling(self) -> None:
        self.sampler.ready()

    @property
    def infer_dtype(self) -> str:
        return self.sampler.infer_dtype

    @property
    def prompt_dtype(self) -> str:
        return self.sampler.prompt_dtype

    @property
    def int8_head(self) -> bool:
        return self.sampler.int8_head

    # -- the model ---------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        # From the module itself, never a compiled wrapper: canonical names, float32.
        return _arrays(self.model)

    def average_state_dict(self) -> dict[str, np.ndarray]:
        assert self._average is not None, "train with an ema decay first"
        return _arrays(self._average.module)

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()})
        self.sampler.weights_changed()

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        logits, _ = self.model(self._tensor(x))
        self.model.train()
        return logits.float().cpu().numpy()

    def peak_flops(self) -> float | None:
        """The device's default peak FLOP/s for MFU, in the training dtype."""
        from lal_core.backends.torch.device import default_peak_flops

        return default_peak_flops(self.torch_device, self.dtype)

    def describe(self) -> str:
        """The fast paths in use, for a run's header: `bfloat16, compiled in 52 s, fused AdamW`."""
        took = f" in {self.compile_seconds:.0f} s" if self.compile_seconds is not None else ""
        parts = [self.dtype, f"compiled{took}" if self.compile else "eager"]
        parts.append("fused AdamW" if self.fused else "foreach AdamW")
        parts.append("chunked loss" if self.chunked_loss else "plain loss")
        if self.recompute:
            parts.append("recomputed activations")
        if self.cpu_dropout:
            parts.append("16-bit dropout masks")
        return ", ".join(parts)

    # -- training ----------------------------------------------------------------------------
    def preparing(self) -> str:
        if self.compile and self.compile_seconds is None:
            return (
                f"compiling the model with torch.compile on {self.device}: a one-time wait "
                "of seconds to minutes, timed apart from the steps"
            )
        return ""

    def setup_training(self, train_cfg: TrainConfig) -> None:
        if self.device == "cpu":
            keep_freed_memory()  # each step's large tensors reuse the last step's memory
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
        self._label_smoothing = train_cfg.label_smoothing
        self._average = None
        if train_cfg.ema:  # torch's own EMA: a float32 copy of the weights, lerped to them
            average = get_ema_multi_avg_fn(train_cfg.ema)
            self._average = AveragedModel(self.model, multi_avg_fn=average, use_buffers=False)
        self._micro = train_cfg.micro_per_rank(self.ranks.world)
        if self._recompute_option is None:  # one pass's activations are what memory holds
            self.recompute = default_recompute(self.torch_device, self.cfg, self._micro)
        self._use_loss()
        # float16 overflows where bfloat16 does not: scale the loss so small gradients survive.
        self._scaler = torch.amp.GradScaler(self.device) if self.dtype == "float16" else None
        self.model.train()
        if self.compile and self.compile_seconds is None:
            self._compile(self._micro)
        if self.ranks.joined and self._ddp is None:
            self._ddp = _distributed_loss(self)

    def _compile(self, batch_size: int) -> None:
        """Compile the training loss (and its backward) now, on a dummy batch, so the time it
        takes is reported apart (`compile_seconds`) and not in the first step's."""
        ok, why = compile_available(self.torch_device)
        if not ok:
            warnings.warn(f"torch.compile unavailable ({why}); training eagerly", stacklevel=3)
            self.compile = False
            return
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.torch_device) if self.device == "cuda" else None
        t0 = time.perf_counter()
        try:
            # The chunked loss is called as it is, not traced: its Python loop does not pay.
            rows_loss = torch.compiler.disable(linear_cross_entropy)
            loss_fn = replace(self.loss, rows_loss=rows_loss, label_smoothing=self._label_smoothing)
            compiled = torch.compile(functools.partial(loss_fn, self.model))
            x = torch.zeros(batch_size, self.cfg.block_size, dtype=torch.long).to(self.torch_device)
            with autocast(self.torch_device, self.dtype):
                compiled(x, x).backward()
            self._train_loss = compiled
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
            if self._ddp is None:
                return self._train_step(x, y, lr)
            with lost_rank_is_said():
                return self._train_step(x, y, lr)

    def _train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        assert self.optimizer is not None, "call setup_training first"
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.sampler.weights_changed()  # a sampling copy would be stale
        self.model.train()  # samples drawn since the last step left it in eval mode
        if self.ranks.rank:  # rank 0's generator state is in the saved state; the others':
            torch.manual_seed(self.ranks.dropout_seed(self._seed, self._steps()))
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._accumulate(x, y)
        if self._scaler is not None:
            self._scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._params, self._grad_clip)
            # float16: an overflowed gradient is expected now and then; the scaler skips that
            # update and lowers the scale. Only a non-finite loss is a failure.
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            norm = torch.nn.utils.clip_grad_norm_(self._params, self._grad_clip)
            if not torch.isfinite(norm):
                # A non-finite gradient would poison the weights: skip the update, report it.
                self.optimizer.zero_grad(set_to_none=True)
                return float("nan")
            self.optimizer.step()
        if self._average is not None:
            self._average.update_parameters(self.model)
        return loss.item()

    def _steps(self) -> int:
        """Optimizer steps taken so far (AdamW's count, which a resume restores)."""
        state = self.optimizer.state.get(self._params[0]) if self.optimizer else None
        return int(state["step"]) if state else 0

    def _accumulate(self, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        """Forward and backward over this rank's passes of the batch (`passes`): the
        parameters' .grad hold the whole batch's gradient (scaled, under float16), summed over
        the ranks by DDP; the batch's loss, summed over the ranks too."""
        loss = torch.zeros((), device=self.torch_device)
        plan = passes(x, y, self._micro, self.ranks)
        for i, (xs, ys, share) in enumerate(plan):
            # Each pass's mean loss, weighted by its share of the batch's counted targets: the
            # gradients add up to the whole batch's. (A staging buffer per pass: on CUDA the
            # step synchronises only at its end.) Under DDP the gradients are averaged over the
            # ranks once, in the last pass's backward; the loss is scaled by the world size so
            # that average is the sum.
            last = i == len(plan) - 1
            quiet = self._ddp.no_sync() if self._ddp is not None and not last else None
            with quiet or contextlib.nullcontext():
                with autocast(self.torch_device, self.dtype):
                    tx, ty = self._tensor(xs, f"x{i}"), self._tensor(ys, f"y{i}")
                    part = self._ddp(tx, ty) if self._ddp is not None else self._train_loss(tx, ty)
                    part = part if share == 1.0 else part * share
                scaled = part * self.ranks.world if self._ddp is not None else part
                (self._scaler.scale(scaled) if self._scaler is not None else scaled).backward()
            loss += part.detach().float()
        if self._ddp is not None:
            import torch.distributed as dist

            dist.all_reduce(loss, op=dist.ReduceOp.SUM)
        return loss

    def gradients(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        assert self.optimizer is not None, "call setup_training first"
        self.model.zero_grad(set_to_none=True)
        with TRAINING.working():
            self._accumulate(x, y)
        scale = self._scaler.get_scale() if self._scaler is not None else 1.0
        grads = {
            name: (p.grad.float() / scale).cpu().numpy()
            for name, p in self.model.named_parameters()
            if p.grad is not None
        }
        self.model.zero_grad(set_to_none=True)
        return grads

    @torch.no_grad()
    def eval_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.eval()
        with TRAINING.working(), autocast(self.torch_device, self.dtype):
            loss = self.loss(self.model, self._tensor(x, "x"), self._tensor(y, "y"))
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
        if self._average is not None:
            out.update({f"ema.{k}": v for k, v in self.average_state_dict().items()})
        return out

    def load_optimizer_state(self, tensors: dict[str, np.ndarray]) -> None:
        assert self.optimizer is not None, "call setup_training first"
        if not self.ranks.rank:  # the saved state is rank 0's; other ranks keep their own
            torch.set_rng_state(torch.from_numpy(tensors["rng.torch"].copy()))
        if "rng.cuda" in tensors and self.torch_device.type == "cuda" and not self.ranks.rank:
            cuda_rng = torch.from_numpy(tensors["rng.cuda"].copy())
            torch.cuda.set_rng_state(cuda_rng, self.torch_device)
        if self._scaler is not None and "scaler.scale" in tensors:
            scaler = self._scaler.state_dict()
            scaler["scale"] = float(tensors["scaler.scale"][0])
            scaler["_growth_tracker"] = int(tensors["scaler.growth_tracker"][0])
            self._scaler.load_state_dict(scaler)
        if self._average is not None and "ema.wte.weight" in tensors:
            average = {
                k[4:]: torch.from_numpy(v.copy()) for k, v in tensors.items() if k[:4] == "ema."
            }
            self._average.module.load_state_dict(average)
            self._average.n_averaged.fill_(1)  # an average to move, not a copy to take
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

    # -- sampling: see sampler -------------------------------------------------------------
    def start_generation(self, rows: int) -> None:
        self.sampler.start(rows)

    def prefill(self, contexts: np.ndarray, use_cache: bool = True) -> torch.Tensor:
        return self.sampler.prefill(contexts, use_cache)

    def extend(self, tokens: np.ndarray) -> torch.Tensor:
        return self.sampler.extend(tokens)

    def see(self, tokens: np.ndarray) -> None:
        self.sampler.see(tokens)

    def candidates(self, logits, top_k, repetition_penalty, with_lse):
        return self.sampler.candidates(logits, top_k, repetition_penalty, with_lse)


class _LossModule(torch.nn.Module):
    """The training loss as a module, for DistributedDataParallel: DDP hooks the gradients of
    the modules it wraps, and the loss reaches the model through `hidden_states` and the head,
    not `GPT.forward`."""

    def __init__(self, backend: TorchBackend) -> None:
        super().__init__()
        self.model = backend.model  # the same parameters: checkpoints keep their plain names
        self._backend = [backend]  # a list: not a submodule

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._backend[0]._train_loss(idx, targets)


def _arrays(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A module's weights as float32 numpy arrays under their names."""
    return {
        name: t.detach().to("cpu", torch.float32).numpy().copy()
        for name, t in module.state_dict().items()
    }


def _distributed_loss(backend: TorchBackend) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    on_cuda = backend.torch_device.type == "cuda"
    device_ids = [backend.torch_device.index or 0] if on_cuda else None
    return DistributedDataParallel(_LossModule(backend), device_ids=device_ids)
