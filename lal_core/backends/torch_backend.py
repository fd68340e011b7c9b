"""The PyTorch backend: the GPT of `lal_core.model` on CUDA, MPS or CPU."""

from __future__ import annotations

import numpy as np
import torch

from lal_core.backends.base import Backend
from lal_core.config import ModelConfig, TrainConfig
from lal_core.device import resolve_device
from lal_core.model import GPT, KVCache


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, cfg: ModelConfig, seed: int = 1337, device: str | None = None) -> None:
        super().__init__(cfg)
        self.torch_device = resolve_device(device)
        self.device = self.torch_device.type
        torch.manual_seed(seed)  # the same seed gives the same initial weights
        self.model = GPT(cfg).to(self.torch_device)
        self.optimizer: torch.optim.Optimizer | None = None
        self._grad_clip = 1.0
        self._generator: torch.Generator | None = None
        self._cache: KVCache | None = None

    # -- the model ---------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            name: t.detach().to("cpu", torch.float32).numpy().copy()
            for name, t in self.model.state_dict().items()
        }

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()})

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.torch_device)

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        logits, _ = self.model(self._tensor(x))
        self.model.train()
        return logits.float().cpu().numpy()

    # -- training ----------------------------------------------------------------------------
    def setup_training(self, train_cfg: TrainConfig) -> None:
        # Weight decay on matrices and embeddings only; biases and LayerNorm gains are exempt.
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": train_cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(
            groups, lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2)
        )
        self._grad_clip = train_cfg.grad_clip
        self.model.train()

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        assert self.optimizer is not None, "call setup_training first"
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        _, loss = self.model(self._tensor(x), self._tensor(y))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self._grad_clip)
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def eval_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.eval()
        _, loss = self.model(self._tensor(x), self._tensor(y))
        self.model.train()
        return loss.item()

    # -- sampling ----------------------------------------------------------------------------
    def start_generation(self, seed: int | None) -> None:
        self._generator = torch.Generator(device=self.torch_device)
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self.model.eval()

    @torch.no_grad()
    def prefill(self, tokens: list[int], use_cache: bool = True) -> torch.Tensor:
        idx = torch.tensor([tokens], dtype=torch.long, device=self.torch_device)  # (1, T)
        self._cache = KVCache(self.cfg, 1, self.torch_device, torch.float32) if use_cache else None
        logits, _ = self.model(idx, cache=self._cache)
        return logits[0, -1]  # (V,)

    @torch.no_grad()
    def extend(self, token: int) -> torch.Tensor:
        assert self._cache is not None, "prefill with use_cache first"
        idx = torch.tensor([[token]], dtype=torch.long, device=self.torch_device)  # (1, 1)
        logits, _ = self.model(idx, cache=self._cache)
        return logits[0, -1]  # (V,)

    @torch.no_grad()
    def sample(self, logits: torch.Tensor, temperature: float, top_k: int | None):
        logits = logits.float()
        if temperature == 0:
            token = int(torch.argmax(logits))
            return token, float(torch.softmax(logits, dim=-1)[token])
        logits = logits / temperature
        if top_k is not None and top_k < logits.numel():
            kth = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        token = int(torch.multinomial(probs, 1, generator=self._generator))
        return token, float(probs[token])
