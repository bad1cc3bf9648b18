"""torch.distributed through torchrun: process-group set-up, the launcher, data splitting and
gathering evaluation outputs across ranks.

Processes are started by ``torch.distributed.run`` (torchrun), never by a home-made spawner:
``--num-gpus N`` on one node re-runs the same command under torchrun with N processes; for
several nodes users call torchrun themselves and the trainer reads its environment.

Errors: a rank that fails prints its error at once and exits without waiting for the others
(:func:`cleanup_distributed` waits in a barrier only after success); torchrun then stops the
other ranks, and :func:`relaunch_with_torchrun` names the rank that failed first.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler


def is_torchrun_worker() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


# set by the launching process for its torchrun workers: it holds the output dir's lock
OUTPUT_DIR_OWNED_BY_LAUNCHER = "MMPROMPT_OUTPUT_DIR_OWNED_BY_LAUNCHER"


def owns_output_dir() -> bool:
    """Whether this process checks and locks the output dir: a single process, the process that
    launches torchrun workers, or rank 0 of workers started by the user's own torchrun."""
    if not is_torchrun_worker():
        return True
    return os.environ.get(OUTPUT_DIR_OWNED_BY_LAUNCHER) != "1" and os.environ.get("RANK") == "0"


def check_backend(backend: str, use_cuda: bool) -> str:
    """The backend for ``backend`` (auto, nccl, gloo) on this machine; nccl without a usable GPU
    is a ConfigError instead of a crash inside the process-group set-up."""
    from ..errors import ConfigError

    cuda = use_cuda and torch.cuda.is_available()
    if backend == "auto":
        return "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        why = "USE_CUDA is False" if not use_cuda else "no GPU is visible to this process"
        raise ConfigError(
            f"TRAIN.DIST_BACKEND nccl needs GPUs, but {why}. Use TRAIN.DIST_BACKEND gloo (or auto) for CPU processes."
        )
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("TRAIN.DIST_BACKEND nccl: this PyTorch build has no NCCL. Use gloo (or auto).")
    return backend


def init_distributed(backend: str, use_cuda: bool) -> torch.device:
    """Join the process group torchrun describes (no-op for a single process); the device."""
    cuda = use_cuda and torch.cuda.is_available()
    if not is_torchrun_worker() or int(os.environ["WORLD_SIZE"]) == 1:
        return torch.device("cuda" if cuda else "cpu")
    backend = check_backend(backend, use_cuda)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def cleanup_distributed(succeeded: bool = True) -> None:
    """Leave the process group. After success every rank waits for the others first; after an
    error this rank leaves at once (the others may be inside a collective that will never
    complete; torchrun stops them when this process exits)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if succeeded:
        dist.barrier()
        dist.destroy_process_group()


# how gloo / NCCL / the TCP store report that another rank went away
_PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "Socket Timeout",
    "failed to recv",
    "Connection refused",
)


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is this rank noticing that another rank died (which reports its own error)."""
    dist_error = getattr(dist, "DistError", ())
    return world_size() > 1 and (
        isinstance(error, dist_error) or (isinstance(error, RuntimeError) and any(s in str(error) for s in _PEER_GONE))
    )


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def relaunch_with_torchrun(nproc: int, argv: Optional[List[str]] = None) -> int:
    """Re-run this script under torchrun with ``nproc`` processes on this node; the exit code
    (that of the first rank that failed, whose own error message is printed above)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    argv = list(sys.argv if argv is None else argv)
    args = torchrun.get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", argv[0], *argv[1:]])
    previous = os.environ.get(OUTPUT_DIR_OWNED_BY_LAUNCHER)
    os.environ[OUTPUT_DIR_OWNED_BY_LAUNCHER] = "1"
    try:
        torchrun.run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"stopped with exit code {code}"
        print(
            f"error: rank {rank} of {nproc} {how} (its error is printed above); the other ranks were stopped.",
            file=sys.stderr,
            flush=True,
        )
        return code if code > 0 else 1
    finally:
        if previous is None:
            os.environ.pop(OUTPUT_DIR_OWNED_BY_LAUNCHER, None)
        else:
            os.environ[OUTPUT_DIR_OWNED_BY_LAUNCHER] = previous
    return 0


class EpochBatchSampler(Sampler[List[int]]):
    """Global batches from a permutation derived from (seed, epoch), this rank's slice of each.

    The order of an epoch depends only on (seed, epoch), so a resumed run sees the same data as an
    uninterrupted one, and ``skip`` drops the batches already trained on before a mid-epoch
    checkpoint. Each global batch of ``batch_size`` is cut into ``world`` equal slices, so the
    averaged DDP gradient equals the single-process gradient of the same global batch; a last
    global batch that would not split evenly is dropped (Dassl drops the last train batch too).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        world: int = 1,
        rank: int = 0,
        drop_last: bool = True,
    ):
        if batch_size % world:
            from ..errors import ConfigError

            raise ConfigError(
                f"The train batch size {batch_size} (the global batch) must be divisible "
                f"by the number of processes {world}."
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.seed, self.world, self.rank = shuffle, seed, world, rank
        # Dassl keeps a short last batch when the data is smaller than one batch
        self.drop_last = drop_last and num_samples >= batch_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _global_batches(self) -> List[List[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        batches = [order[i : i + self.batch_size] for i in range(0, self.num_samples, self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size and (self.drop_last or len(batches[-1]) % self.world):
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        per_rank = None
        for batch in self._global_batches()[self.skip :]:
            per_rank = len(batch) // self.world
            yield batch[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return len(self._global_batches()) - self.skip


class EpochSeededDataset(Dataset):
    """Draws each item's random augmentation from torch's RNG seeded by (seed, epoch, index).

    An item then looks the same whichever process or loader worker reads it and whenever it is
    read: a resumed run (even mid-epoch, with workers), one process or several, get identical
    augmentations. The caller's own RNG state is restored after each item.
    """

    def __init__(self, base, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2**63)
            return self.base[index]


class ShardSampler(Sampler[int]):
    """Evaluation split across ranks without padding (rank r takes r, r+world, ...), so gathered
    outputs hold each sample exactly once."""

    def __init__(self, num_samples: int, world: int = 1, rank: int = 0):
        self.indices = list(range(rank, num_samples, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a (n_r, ...) tensor from every rank on every rank (n_r may differ)."""
    if world_size() == 1:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(sizes),) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


def gather_objects(obj) -> list:
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
