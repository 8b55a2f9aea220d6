"""MAT's regional independence loss under DDP: the centres move with the global batch (averaged
over processes), as one process with the whole batch moves them."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from dfattn.models.mat import RegionalIndependenceLoss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 4, 6, generator=g), torch.tensor([0, 1] * 4)


def _worker(rank: int, world: int, port: int, out: str, variant: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        semantic, labels = _batch()
        shard = slice(rank * 4, rank * 4 + 4)  # each process: its half of the global batch
        ril = RegionalIndependenceLoss(4, 6, variant=variant).train()
        ril(semantic[shard], labels[shard])
        torch.save(ril.centers, f"{out}/centers_{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_centres_are_averaged_over_processes(tmp_path, variant):
    semantic, labels = _batch()
    one = RegionalIndependenceLoss(4, 6, variant=variant).train()
    one(semantic, labels)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), variant), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        centres = torch.load(tmp_path / f"centers_{rank}.pt", weights_only=True)
        torch.testing.assert_close(centres, one.centers)
    half = RegionalIndependenceLoss(4, 6, variant=variant).train()
    half(semantic[:4], labels[:4])  # what rank 0 alone would have written
    assert not torch.allclose(half.centers, one.centers)
