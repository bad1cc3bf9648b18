"""Data order and augmentation depend only on (seed, epoch[, index]): resumable and rank-independent."""

import torch

from mmprompt.engine.distributed import EpochBatchSampler, EpochSeededDataset


class RandomlyAugmented(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, index):
        return torch.rand(2) + index  # stands for a random crop/flip drawn from torch's RNG


def test_augmentation_depends_on_seed_epoch_index_only_and_leaves_the_rng_alone():
    data = EpochSeededDataset(RandomlyAugmented(), seed=3)
    state = torch.get_rng_state()
    first = [data[i] for i in range(12)]
    backwards = [data[i] for i in reversed(range(12))][::-1]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first, backwards))
    data.epoch = 1
    assert not torch.equal(data[0], first[0])


def test_loader_workers_give_the_same_batches_as_the_main_process():
    data = EpochSeededDataset(RandomlyAugmented(), seed=3)
    sampler = EpochBatchSampler(12, 4, shuffle=True, seed=3)
    sampler.set_epoch(2)
    main = list(torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=0))
    workers = list(torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=2))
    assert len(main) == 3 and all(torch.equal(a, b) for a, b in zip(main, workers))


def test_sampler_order_resumes_mid_epoch_and_splits_global_batches_over_ranks():
    full = EpochBatchSampler(10, 4, shuffle=True, seed=1)
    full.set_epoch(5)
    batches = list(full)
    assert [len(b) for b in batches] == [4, 4]  # the short last batch is dropped
    assert batches != [[0, 1, 2, 3], [4, 5, 6, 7]]  # shuffled
    resumed = EpochBatchSampler(10, 4, shuffle=True, seed=1)
    resumed.set_epoch(5, skip=1)
    assert list(resumed) == batches[1:]
    ranks = [EpochBatchSampler(10, 4, shuffle=True, seed=1, world=2, rank=r) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(5)
    assert [a + b for a, b in zip(*ranks)] == batches
    other_epoch = EpochBatchSampler(10, 4, shuffle=True, seed=1)
    other_epoch.set_epoch(6)
    assert list(other_epoch) != batches


def test_drop_last_false_keeps_the_short_last_batch_as_vpt_does_on_one_gpu():
    import os

    from _sandbox import REPO  # noqa: F401  (puts the repository on sys.path)

    from mmprompt.config import get_cfg, load_cfg

    keep = EpochBatchSampler(10, 4, shuffle=True, seed=1, drop_last=False)
    keep.set_epoch(5)
    assert [len(b) for b in keep] == [4, 4, 2] and len(keep) == 3
    # with 2 processes the short batch splits evenly and is kept; with 3 (batch 6) it would not be
    ranks = [EpochBatchSampler(10, 4, shuffle=True, seed=1, world=2, rank=r, drop_last=False) for r in (0, 1)]
    assert [len(b) for b in ranks[0]] == [2, 2, 1]
    odd = EpochBatchSampler(10, 6, shuffle=True, seed=1, world=3, rank=0, drop_last=False)
    assert [len(b) for b in odd] == [2]
    assert get_cfg().DATALOADER.TRAIN_X.DROP_LAST is True  # Dassl / CoOp
    vpt = load_cfg(os.path.join(REPO, "configs", "vpt_deep_cub.yaml"))
    assert vpt.DATALOADER.TRAIN_X.DROP_LAST is False
