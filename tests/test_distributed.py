"""bigkern models under DistributedDataParallel and FSDP (fully_shard) across 2 CPU processes
with gloo: after N steps the parameters equal those of one process training on the same global
batch (gradient averaging over equal shards is the mean over the whole batch)."""

import gc
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from bigkern import models

STEPS, GLOBAL_BATCH, WORLD = 3, 8, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(name):
    torch.manual_seed(0)
    if name == "lenet":
        return models.LeNet5()
    return models.LSTMClassifier(8, 16, num_layers=2)


def batches(name):
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = torch.rand(GLOBAL_BATCH, 1, 28, 28, generator=g) if name == "lenet" else torch.randn(GLOBAL_BATCH, 6, 8, generator=g)
        yield x, torch.randint(0, 10, (GLOBAL_BATCH,), generator=g)


def train(model, name, rank=0, world=1):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    shard = GLOBAL_BATCH // world
    for x, y in batches(name):
        optimizer.zero_grad()
        F.cross_entropy(model(x[rank * shard : (rank + 1) * shard]), y[rank * shard : (rank + 1) * shard]).backward()
        optimizer.step()


def train_wrapped(rank, wrapper, name):
    """Trains this rank's replica or shard and returns the full state dict; the wrapper (and the
    collective work it holds) is garbage once this returns."""
    model = build(name)
    if wrapper == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        wrapped = fully_shard(model)
    train(wrapped, name, rank, WORLD)
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}


def worker(rank, port, wrapper, name, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        state = train_wrapped(rank, wrapper, name)
        if rank == 0:
            torch.save(state, out_path)
        # Teardown order matters with gloo: the DDP/FSDP wrappers (which hold gloo work objects)
        # are collected first, then every rank waits for the others' collectives, and only then is
        # the group destroyed. A wrapper that outlived the group, or a rank that tore it down while
        # a peer's work was in flight, aborted a rank now and then under load ("terminate called
        # without an active exception" from gloo's threads).
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
@pytest.mark.parametrize("name", ["lenet", "lstm-classifier"])
def test_two_processes_match_one(wrapper, name, tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(free_port(), wrapper, name, str(out)), nprocs=WORLD, join=True)
    distributed = torch.load(out, weights_only=True)
    single = build(name)
    train(single, name)
    expected = single.state_dict()
    assert distributed.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
    initial = build(name).state_dict()
    assert any(not torch.equal(initial[k], expected[k]) for k in expected)  # training moved the weights
