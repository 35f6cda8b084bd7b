"""Device helpers: worker start method (CUDA cannot be used in a forked child) and the
log records of spawned workers."""

from __future__ import annotations

import logging
import multiprocessing

from pseudopet_bids.device import needs_spawn, worker_pool


def _work(x: int) -> tuple[int, str]:
    logging.getLogger("pseudopet.tests.worker").info("worker got %d", x)
    return x * x, multiprocessing.current_process().name


def test_workers_that_may_use_cuda_are_spawned():
    # the parent already asked torch.cuda whether a GPU is there: a forked child that puts a
    # learned model on it fails ("Cannot re-initialize CUDA in forked subprocess")
    assert needs_spawn("auto", learned=True)
    assert needs_spawn("cuda", learned=True) and needs_spawn("cuda:1", learned=True)
    assert not needs_spawn("cpu", learned=True)       # never touches CUDA: fork is cheaper
    assert not needs_spawn("auto", learned=False)     # tissue model: no torch device at all


def test_spawned_pool_runs_and_forwards_its_log_records(caplog):
    caplog.set_level(logging.INFO)
    with worker_pool(2, spawn=True) as pool:
        assert pool._mp_context.get_start_method() == "spawn"  # type: ignore[attr-defined]
        results = list(pool.map(_work, [2, 3]))
    assert [r[0] for r in results] == [4, 9]
    messages = [r.getMessage() for r in caplog.records if r.name == "pseudopet.tests.worker"]
    assert sorted(messages) == ["worker got 2", "worker got 3"]
    with worker_pool(2, spawn=False) as pool:
        assert pool._mp_context.get_start_method() == "fork"  # type: ignore[attr-defined]
        assert list(pool.map(_work, [4]))[0][0] == 16


def test_deterministic_switch_sets_the_cuda_kernel_choices(monkeypatch):
    import torch

    from pseudopet_bids.device import CUBLAS_DETERMINISTIC, configure_determinism

    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda mode, warn_only=False: calls.append((mode, warn_only)))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure_determinism(torch.device("cpu"), True)          # the CPU: nothing to change
    assert not calls and not torch.backends.cudnn.benchmark
    configure_determinism(torch.device("cuda:0"), False)      # fastest kernels, autotuned
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not calls
    configure_determinism(torch.device("cuda:0"), True)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert calls == [(True, True)]
    import os
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_DETERMINISTIC
