"""The MLX backend: the GPT of `model.gpt_mlx` on the Apple GPU (macOS) or the CPU (Linux wheels).

The twin of `torch/backend.py`: the same methods, the same recipe (AdamW with decay on matrices
only, global-norm clipping, the learning rate the trainer passes each step), the same sampling.
MLX is lazy, so a training step builds one graph (loss, gradients, clipping, AdamW update),
compiled once with `mx.compile` on the GPU, and `mx.eval` runs it at the end of the step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from lal_core.backends.base import Backend, Candidates, passes
from lal_core.backends.distributed import lost_rank_is_said
from lal_core.errors import CheckpointError, DeviceError
from lal_core.model.config import ModelConfig
from lal_core.model.gpt_mlx import GPT, KVCache
from lal_core.model.recipe import TrainConfig

MLX_DEVICES = ("cpu", "gpu")


def resolve_mlx_device(requested: str | None) -> mx.Device:
    """The MLX device: its default (the GPU where there is one) unless the user names one."""
    if requested in (None, "", "auto"):
        return mx.default_device()
    if requested not in MLX_DEVICES:
        raise DeviceError(
            f"unknown MLX device {requested!r}; choose one of: auto, {', '.join(MLX_DEVICES)}"
        )
    device = mx.Device(mx.gpu if requested == "gpu" else mx.cpu)
    if not mx.is_available(device):
        raise DeviceError("--device gpu was asked for but MLX has no GPU here; use --device cpu")
    return device


class _AdamW(optim.AdamW):
    """AdamW that decays matrices and embeddings only, like the PyTorch backend's two groups.

    Vectors (LayerNorm gains, biases) take the plain Adam step.
    """

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        if parameter.ndim < 2:
            return optim.Adam.apply_single(self, gradient, parameter, state)
        return super().apply_single(gradient, parameter, state)


def _loss(model: GPT, x: mx.array, y: mx.array, label_smoothing: float = 0.0) -> mx.array:
    """The training loss: the model's cross-entropy, or with `label_smoothing` of the targets
    (TrainConfig's; evals score without it) MLX's smoothed one, -1 targets ignored alike."""
    if not label_smoothing:
        return model(x, y)[1]
    logits, _ = model(x)  # (B, T, V)
    counted = y != -1  # (B, T)
    losses = nn.losses.cross_entropy(
        logits.astype(mx.float32), mx.where(counted, y, 0), label_smoothing=label_smoothing
    )  # (B, T)
    return mx.where(counted, losses, 0.0).sum() / counted.sum()


def _accumulated(loss_and_grad, model: GPT, xs: list, ys: list, shares: mx.array):
    """(loss, gradients) of a batch run as passes, each weighted by its share of the batch's
    counted targets: the whole batch's (a single pass's share is 1: the weight changes
    nothing)."""
    loss, grads = loss_and_grad(model, xs[0], ys[0])
    loss, grads = loss * shares[0], tree_map(lambda g: g * shares[0], grads)
    for i in range(1, len(xs)):
        part, more = loss_and_grad(model, xs[i], ys[i])
        loss = loss + part * shares[i]
        grads = tree_map(lambda g, m, w=shares[i]: g + m * w, grads, more)
    return loss, grads


def _summed_over_ranks(loss: mx.array, grads):
    """The loss and gradients summed over the ranks (MLX's all_sum): each rank's are its rows'
    share of the global batch's, so the sums are the whole batch's."""
    return mx.distributed.all_sum(loss), tree_map(mx.distributed.all_sum, grads)


class MLXBackend(Backend):
    name = "mlx"

    def __init__(
        self,
        cfg: ModelConfig,
        seed: int = 1337,
        device: str | None = None,
        compile: bool | None = None,
    ) -> None:
        super().__init__(cfg)
        self.mx_device = resolve_mlx_device(device)
        mx.set_default_device(self.mx_device)
        self.device = "gpu" if self.mx_device.type == mx.DeviceType.gpu else "cpu"
        self._seed = seed
        mx.random.seed(seed)  # the same seed gives the same initial weights
        self.model = GPT(cfg)
        mx.eval(self.model.parameters())
        self.optimizer: _AdamW | None = None
        self._grad_clip = 1.0
        self._micro = 0  # sequences per forward pass, set by setup_training
        self._label_smoothing = 0.0  # the training loss's, set by setup_training
        # mx.compile fuses the step's elementwise work into generated kernels: quick on the
        # GPU; on the CPU each kernel is C++-compiled on first use for a modest gain, so there
        # it is opt-in (bench/README.md): LAL_MLX_COMPILE=1 (or compile=True; 0: off anywhere).
        if compile is None:
            env = os.environ.get("LAL_MLX_COMPILE", "")
            compile = env == "1" if env in ("0", "1") else self.device == "gpu"
        self.compile = compile
        self._step = None  # the training step (compiled or not), built on first use
        self._rows = 1  # sequences in this generation
        self._cache: KVCache | None = None
        self._seen: mx.array | None = None  # (rows, V) bool: tokens in each row's context
        self._ema = 0.0  # the decay of the weights' moving average (TrainConfig.ema); 0: none
        self._average: dict | None = None  # that average: the weights until a first step

    # -- the model ---------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.size for _, p in tree_flatten(self.model.parameters()))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            name: np.array(p.astype(mx.float32), copy=True)
            for name, p in tree_flatten(self.model.parameters())
        }

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        weights = [(k, mx.array(np.asarray(v, dtype=np.float32))) for k, v in tensors.items()]
        self.model.load_weights(weights, strict=True)
        mx.eval(self.model.parameters())

    @staticmethod
    def _tokens(a: np.ndarray) -> mx.array:
        return mx.array(np.asarray(a, dtype=np.int32))

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        logits, _ = self.model(self._tokens(x))
        self.model.train()
        return np.array(logits.astype(mx.float32))

    # -- training ----------------------------------------------------------------------------
    def setup_training(self, train_cfg: TrainConfig) -> None:
        # bias_correction=True: the Adam step of torch.optim.AdamW (MLX's default leaves it out).
        self.optimizer = _AdamW(
            learning_rate=train_cfg.lr,
            betas=[train_cfg.beta1, train_cfg.beta2],
            weight_decay=train_cfg.weight_decay,
            bias_correction=True,
        )
        self.optimizer.init(self.model.trainable_parameters())
        self._grad_clip = train_cfg.grad_clip
        self._label_smoothing = train_cfg.label_smoothing
        self._micro = train_cfg.micro_per_rank(self.ranks.world)
        self._ema = train_cfg.ema
        self._average = self.model.parameters() if train_cfg.ema else None
        self._step = None
        self.model.train()

    def _training_loss(self):
        """(model, x, y) -> the training loss, with this run's label smoothing."""
        return functools.partial(_loss, label_smoothing=self._label_smoothing)

    def _make_step(self):
        """loss, grads -> clip -> AdamW update: one lazy graph; compiled, it is traced once
        (again for another number of passes).

        Its inputs are the batch's passes (lists of micro-batches) and each pass's share of
        the batch's counted targets (n,): the weighted gradients add up to the whole batch's.
        Compiled, the model's weights, the optimizer's moments (and learning rate) and the
        random state (for dropout) are the compiled function's implicit inputs and outputs.
        """
        model, optimizer, clip = self.model, self.optimizer, self._grad_clip
        loss_and_grad = nn.value_and_grad(model, self._training_loss())
        ranks = self.ranks

        def step(xs: list, ys: list, shares: mx.array) -> tuple[mx.array, mx.array]:
            loss, grads = _accumulated(loss_and_grad, model, xs, ys, shares)
            if ranks.joined:
                loss, grads = _summed_over_ranks(loss, grads)
            grads, norm = optim.clip_grad_norm(grads, clip)  # norm: before clipping
            optimizer.update(model, grads)
            return loss, norm

        if not self.compile:
            return step
        state = [model.state, optimizer.state, mx.random.state]
        return mx.compile(step, inputs=state, outputs=state)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        assert self.optimizer is not None, "call setup_training first"
        if self._step is None:
            self._step = self._make_step()
        self.model.train()
        self.optimizer.learning_rate = lr
        # Dropout draws from a key fixed by the seed, the step count and the rank, so a resumed
        # run (which restores the step count) draws the same masks as an unbroken one.
        mx.random.seed(self.ranks.dropout_seed(self._seed, int(self.optimizer.step.item())))
        # MLX arrays are values: holding the old weights and moments costs no copy, and lets a
        # step with a non-finite gradient be undone after the fact.
        before = (self.model.parameters(), tree_map(lambda a: a, self.optimizer.state))
        loss, norm = self._step(*self._passes(x, y))
        with lost_rank_is_said() if self.ranks.joined else contextlib.nullcontext():
            mx.eval(loss, norm, self.model.parameters(), self.optimizer.state)
        if not math.isfinite(norm.item()):
            self.model.update(before[0])
            self.optimizer.state = before[1]
            self._step = None  # the compiled step captured the replaced state: trace it again
            return float("nan")
        if self._ema:
            self._update_average()
        return loss.item()

    def _update_average(self) -> None:
        """average <- decay * average + (1 - decay) * weights; the weights, after a first step
        (as torch.optim.swa_utils' EMA)."""
        weights, keep = self.model.parameters(), self._ema
        if self.optimizer.step.item() == 1:  # the first step: its weights (values: no copy)
            self._average = weights
        else:
            self._average = tree_map(lambda a, w: keep * a + (1 - keep) * w, self._average, weights)
        mx.eval(self._average)

    def average_state_dict(self) -> dict[str, np.ndarray]:
        assert self._average is not None, "set up training with an ema decay first"
        return {
            k: np.array(a.astype(mx.float32), copy=True) for k, a in tree_flatten(self._average)
        }

    def _passes(self, x: np.ndarray, y: np.ndarray) -> tuple[list, list, mx.array]:
        split = passes(x, y, self._micro, self.ranks)
        xs = [self._tokens(p[0]) for p in split]
        ys = [self._tokens(p[1]) for p in split]
        return xs, ys, mx.array([p[2] for p in split], dtype=mx.float32)

    def gradients(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        assert self.optimizer is not None, "call setup_training first"
        self.model.train()
        loss_and_grad = nn.value_and_grad(self.model, self._training_loss())
        _, grads = _accumulated(loss_and_grad, self.model, *self._passes(x, y))
        return {k: np.array(g.astype(mx.float32)) for k, g in tree_flatten(grads)}

    def eval_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.eval()
        _, loss = self.model(self._tokens(x), self._tokens(y))
        value = loss.item()
        self.model.train()
        return value

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's step count ("step", as the torch backend writes it) and float32 moments
        ("m.<name>", "v.<name>"). Dropout's random state follows from the seed and the step."""
        assert self.optimizer is not None, "call setup_training first"
        out = {"step": np.array([self.optimizer.step.item()], dtype=np.float64)}
        for key, value in tree_flatten(self.optimizer.state):
            name, _, moment = key.rpartition(".")
            if moment in ("m", "v"):
                out[f"{moment}.{name}"] = np.array(value.astype(mx.float32), copy=True)
        if self._average is not None:
            out.update({f"ema.{k}": v for k, v in self.average_state_dict().items()})
        return out

    def load_optimizer_state(self, tensors: dict[str, np.ndarray]) -> None:
        assert self.optimizer is not None, "call setup_training first"
        if self._ema and "ema.wte.weight" in tensors:
            saved = [
                (k[4:], mx.array(v.astype(np.float32)))
                for k, v in tensors.items()
                if k[:4] == "ema."
            ]
            self._average = tree_unflatten(saved)
        if "step" not in tensors:
            return  # saved before the first step: nothing to restore
        params = dict(tree_flatten(self.model.trainable_parameters()))
        moments = []
        for name, p in params.items():
            for m in "mv":
                value = tensors.get(f"{m}.{name}")
                if value is None or tuple(value.shape) != tuple(p.shape):
                    raise CheckpointError(
                        f"the saved optimizer state does not fit this model ({m}.{name})"
                    )
                moments.append((f"{name}.{m}", mx.array(value.astype(np.float32))))
        self.optimizer.state = {
            **tree_unflatten(moments),
            "step": mx.array(int(np.asarray(tensors["step"]).reshape(-1)[0]), dtype=mx.uint64),
            "learning_rate": self.optimizer.learning_rate,
        }
        self.optimizer.init(self.model.trainable_parameters())  # marks it initialised
        self._step = None  # the compiled step captured the old state: trace it again

    # -- sampling ----------------------------------------------------------------------------
    def start_generation(self, rows: int) -> None:
        self._rows = rows
        self._seen = None
        self.model.eval()

    def _run(self, idx: mx.array) -> mx.array:
        x = self.model.hidden_states(idx, self._cache)  # (B, T, C)
        last = self.model.head(x[:, -1])  # (B, V): the head on the last position only
        if self._cache is not None and x.shape[0] < self._rows:
            # A context shared by every row ran once: each row starts from its keys and values.
            self._cache.broadcast(self._rows)
        cached = [] if self._cache is None else self._cache.k + self._cache.v
        mx.eval(last, *cached)  # compute now: the graph does not grow token after token
        return mx.broadcast_to(last, (self._rows, last.shape[-1]))  # (rows, V)

    def prefill(self, contexts: np.ndarray, use_cache: bool = True) -> mx.array:
        self._cache = KVCache(self.cfg) if use_cache else None
        return self._run(self._tokens(contexts))  # (1 or rows, T)

    def extend(self, tokens: np.ndarray) -> mx.array:
        assert self._cache is not None, "prefill with use_cache first"
        return self._run(self._tokens(tokens).reshape(-1, 1))  # (rows, 1)

    def see(self, tokens: np.ndarray) -> None:
        if self._seen is None:
            self._seen = mx.zeros((self._rows, self.cfg.vocab_size), dtype=mx.bool_)
        ids = self._tokens(tokens)  # (rows, n)
        self._seen = mx.put_along_axis(self._seen, ids, mx.array(True), axis=1)

    def candidates(
        self, logits: mx.array, top_k: int | None, repetition_penalty: float, with_lse: bool
    ) -> Candidates:
        logits = logits.astype(mx.float32)
        if repetition_penalty != 1:
            assert self._seen is not None, "see the context's tokens first"
            lowered = mx.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
            logits = mx.where(self._seen, lowered, logits)
        lse = np.array(mx.logsumexp(logits, axis=-1)) if with_lse else None
        if top_k is None or top_k >= logits.shape[-1]:
            return Candidates(np.array(logits), None, lse)
        ids = mx.argpartition(-logits, kth=top_k - 1, axis=-1)[:, :top_k]  # (rows, k), unordered
        values = mx.take_along_axis(logits, ids, axis=-1)
        return Candidates(np.array(values), np.array(ids).astype(np.int64), lse)
