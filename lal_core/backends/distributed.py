"""Data-parallel training over several processes: torch.distributed, launched by torchrun.

torchrun starts one process per rank and tells each its place (RANK, WORLD_SIZE, LOCAL_RANK)
and where the ranks meet (MASTER_ADDR, MASTER_PORT). Every rank runs the same training loop:

- each step every rank draws the same global batch from the same seed and computes its own
  rows of it (`Ranks.rows`); DistributedDataParallel sums the gradients in backward, so every
  rank takes the same step, the one a single process would take on the whole batch;
- an eval splits its windows across the ranks and sums their losses (`Ranks.sum`);
- the ranks agree, once a step, whether to stop (`AgreedStop`), so a stop request or Ctrl-C
  seen by any rank stops all of them at the same step and none is left waiting in a collective;
- rank 0 alone writes the run folder.

One process (no launcher) is `Ranks()`: nothing is shared and no collective runs. The torch
backend's ranks come from torchrun (torch.distributed: gloo, NCCL); the MLX backend's from
MLX's own launcher, `mlx.launch` (its ring backend between CPUs or Macs), with the same rule:
the same global batch, each rank its rows, gradients summed (`mx.distributed.all_sum`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lal_core.errors import ConfigError, RankLost

# How long a collective waits for a rank that has not come (gloo, NCCL). A rank that dies
# closes its connections and the others fail at once; this bounds a rank that hangs.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a run, and the collectives they share."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives run: NCCL's tensors live on this rank's GPU
    # In a process group (under a launcher, even as its only rank): collectives and DDP run.
    joined: bool = False
    via: str = "torch"  # whose collectives: torch.distributed (torchrun) or MLX's (mlx.launch)

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run folder and prints."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of n (n divides by the world size)."""
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if not self.joined:
            return [float(v) for v in values]
        if self.via == "mlx":
            import mlx.core as mx

            # float32: MLX's collectives do not take float64 on every device.
            with lost_rank_is_said():
                summed = mx.distributed.all_sum(mx.array(list(values), dtype=mx.float32))
                return [float(v) for v in summed.tolist()]
        import torch
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        with lost_rank_is_said():
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def describe(self, micro: int) -> str:
        """` | 2 ranks x micro-batch 8 (gloo)` for a run's header; '' for one process."""
        if not self.joined:
            return ""
        link = "nccl" if self.device.startswith("cuda") else "gloo"
        link = "mlx.launch" if self.via == "mlx" else link
        ranks = f"{self.world} rank{'s' if self.world > 1 else ''}"
        return f" | {ranks} x micro-batch {micro} ({link})"

    def dropout_seed(self, seed: int, step: int) -> int:
        """The seed of this rank's dropout masks at optimizer step `step`: from the run's seed,
        the step and the rank alone, so a resume draws them again without saved generators,
        and each rank its own (their rows are other sequences)."""
        return seed + step + self.rank * 1_000_003

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (a collective: every rank must ask)."""
        if not self.joined:
            return bool(flag)
        return self.sum([float(flag)])[0] > 0


ONE_PROCESS = Ranks()


class AgreedStop:
    """A stop request the ranks agree on: `is_set()` is true on every rank as soon as it is true
    on one. A collective, so every rank must call it at the same points (the step loop does,
    once a step; an eval, once a round of batches)."""

    def __init__(self, stop, ranks: Ranks) -> None:
        self.stop, self.ranks = stop, ranks

    def is_set(self) -> bool:
        return self.ranks.any(self.stop.is_set())


@contextlib.contextmanager
def lost_rank_is_said() -> Iterator[None]:
    """Turns the error a collective raises when another rank is gone into one RankLost line."""
    try:
        yield
    except Exception as exc:
        if _is_lost_rank(exc):
            raise RankLost(
                "another rank of this distributed run stopped without saying why "
                f"({type(exc).__name__}); resume the run from its last eval"
            ) from None
        raise


def _is_lost_rank(exc: BaseException) -> bool:
    """Whether `exc` is a collective's word that a peer is gone: torch.distributed's errors,
    gloo's and NCCL's, MLX's ring backend's ("connection to a peer was lost")."""
    dist = sys.modules.get("torch.distributed")
    kinds = tuple(filter(None, (getattr(dist, n, None) for n in ("DistError", "DistBackendError"))))
    if kinds and isinstance(exc, kinds):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        words in text
        for words in ("connection closed", "connection reset", "peer", "gloo", "nccl", "[ring]")
    )


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def under_mlx_launch() -> bool:
    return "MLX_RANK" in os.environ


def under_a_launcher() -> bool:
    return under_torchrun() or under_mlx_launch()


def join(device: str | None) -> Ranks:
    """This process's Ranks: under torchrun, joins the process group (NCCL on CUDA, one GPU per
    local rank; gloo otherwise), even as its only rank, so the distributed path runs as it
    would on more; under mlx.launch, MLX's group (the ring backend on CPUs); else one process,
    `Ranks()`."""
    if under_mlx_launch():
        import mlx.core as mx

        group = mx.distributed.init(strict=True)
        return Ranks(rank=group.rank(), world=group.size(), joined=True, via="mlx")
    if not under_torchrun():
        return Ranks()
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    kind = (device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]
    if kind == "mps":
        raise ConfigError("data-parallel training runs on CUDA or the CPU, not MPS")
    on_cuda = kind == "cuda"
    where = f"cuda:{local}" if on_cuda else "cpu"
    if on_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if on_cuda else "gloo",
            timeout=COLLECTIVE_TIMEOUT,
            device_id=torch.device(where) if on_cuda else None,
        )
    return Ranks(rank=rank, world=world, local_rank=local, device=where, joined=True)


@contextlib.contextmanager
def joined(device: str | None) -> Iterator[Ranks]:
    """`with joined(device) as ranks:` this process's Ranks (`join`), the process group left
    at the end however the block ends."""
    ranks = join(device)
    try:
        yield ranks
    finally:
        leave(ranks)


def leave(ranks: Ranks) -> None:
    """Leave the process group (at the end of a distributed run; MLX's needs no leaving)."""
    if ranks.joined and ranks.via == "torch":
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
