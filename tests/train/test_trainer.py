"""The generic trainer: LR schedules, devices, exact resume, export, logs, data parallelism."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pseudopet_bids.io import files
from pseudopet_bids.errors import ProcessingError, UsageError
from pseudopet_bids.models import checkpoint as ckpt
from pseudopet_bids.models.presets import preset
from pseudopet_bids.models.registry import build_model
from pseudopet_bids.train.data import SliceSet, UnpairedSampler
from pseudopet_bids.device import resolve_device
from pseudopet_bids.train.trainer import Trainer, TrainSettings, lr_lambda

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- schedules


def test_linear_half_schedule():
    f = lr_lambda("linear-half", 10, 2e-4, 0.0)
    assert [f(s) for s in range(6)] == [1.0] * 6          # constant for the first half
    assert f(7) == pytest.approx(0.6)
    assert f(9) == pytest.approx(0.2)
    assert f(10) == 0.0 and f(12) == 0.0                   # reaches 0, never negative
    values = [f(s) for s in range(12)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    g = lr_lambda("linear-half", 7, 1.0, 0.0)              # odd totals: half = 3
    assert g(2) == 1.0 and g(3) == 1.0 and g(7) == 0.0 and 0 < g(5) < 1


def test_cosine_schedule():
    lr, lr_min, total = 1.6e-4, 1e-5, 20
    f = lr_lambda("cosine", total, lr, lr_min)
    assert f(0) == pytest.approx(1.0)
    assert f(total) == pytest.approx(lr_min / lr)
    assert f(total + 5) == pytest.approx(lr_min / lr)      # stays at the floor
    assert f(total // 2) == pytest.approx((1 + lr_min / lr) / 2)
    values = [f(s) for s in range(total + 1)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert lr_lambda("constant", 5, 1.0, 0.0)(3) == 1.0
    with pytest.raises(ValueError):
        lr_lambda("step", 5, 1.0, 0.0)


def test_auto_preset_follows_the_device():
    from pseudopet_bids.models.presets import AUTO_PRESET, resolve_preset

    assert resolve_preset(AUTO_PRESET, "cuda") == "paper"
    assert resolve_preset(AUTO_PRESET, "cpu") == "small"
    assert resolve_preset("paper", "cpu") == "paper"  # asked for: trained, with a warning


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UsageError, match="no CUDA"):
            resolve_device(name)


# --------------------------------------------------------------------------- helpers


def _slice_set(rng: np.random.Generator, n_vol: int, channels_k: int = 0) -> SliceSet:
    vols, masks = [], []
    for _ in range(n_vol):
        vol = rng.uniform(-1, 1, (32, 40, 6)).astype(np.float32)
        mask = np.zeros(vol.shape, bool)
        mask[4:28, 5:35, 1:5] = True
        vols.append(np.where(mask, vol, -1.0).astype(np.float32))
        masks.append(mask)
    return SliceSet(vols, masks, channels_k)


def _sampler(batch: int = 2, seed: int = 3, rank: int = 0, world: int = 1) -> UnpairedSampler:
    rng = np.random.default_rng(0)
    return UnpairedSampler({"mri": _slice_set(rng, 2), "pet": _slice_set(rng, 1)}, batch,
                           seed, rank, world)


def _model(kind: str, seed: int = 0, **overrides):
    hp = preset(kind, "tiny")
    hp.update(overrides)
    torch.manual_seed(seed)                    # as train/workflow.py does before building
    return build_model(kind, hp, 1)


def _card(kind: str, config_hash: str = "cfg-1") -> dict:
    return {"model": kind, "preset": "tiny", "config_hash": config_hash}


def _settings(**kw) -> TrainSettings:
    args = dict(steps=6, batch_size=2, device="cpu", checkpoint_every=10 ** 6, log_every=2)
    args.update(kw)
    return TrainSettings(**args)


class _Interrupted(Exception):
    pass


class _InterruptAt:
    """A sampler that dies when asked for the batch of ``step`` (a killed run)."""

    def __init__(self, sampler, step: int):
        self.sampler, self.step = sampler, step

    def batch(self, step: int):
        if step == self.step:
            raise _Interrupted(step)
        return self.sampler.batch(step)


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _optimizer_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name, opt in trainer.optimizers.items():
        for idx, state in opt.state_dict()["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"{name}.{idx}.{key}"] = value
    return out


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("kind", ["cyclegan", "syndiff"])
def test_resume_equals_uninterrupted_training(kind, tmp_path):
    steps, stop = 6, 3
    # CycleGAN: an image pool that is full before the interruption, so that its content and
    # its random swaps matter after it
    hp = {"pool_size": 3} if kind == "cyclegan" else {}
    a = Trainer(_model(kind, **hp), _sampler(), _settings(steps=steps), tmp_path / "A",
                _card(kind))
    card_a = a.fit()
    assert a.step == steps

    # a run killed after the checkpoint of step 3 ...
    b1 = Trainer(_model(kind, **hp), _InterruptAt(_sampler(), stop),
                 _settings(steps=steps, checkpoint_every=stop), tmp_path / "B", _card(kind))
    with pytest.raises(_Interrupted):
        b1.fit()
    assert b1.step == stop
    assert not (tmp_path / "B" / ckpt.WEIGHTS).exists()
    state = ckpt.load_training_state(tmp_path / "B")
    assert state["step"] == stop
    # ... continued in a fresh process (fresh model from the same seed, fresh sampler)
    b2 = Trainer(_model(kind, **hp), _sampler(), _settings(steps=steps, resume=True),
                 tmp_path / "B", _card(kind))
    card_b = b2.fit()
    assert b2.step == steps

    _assert_same_tensors(a.model.state_dict(), b2.model.state_dict())
    _assert_same_tensors(a.ema, b2.ema)
    _assert_same_tensors(_optimizer_tensors(a), _optimizer_tensors(b2))
    assert files.sha256_file(tmp_path / "A" / ckpt.WEIGHTS) == \
        files.sha256_file(tmp_path / "B" / ckpt.WEIGHTS)
    assert card_a["weights_sha256"] == card_b["weights_sha256"]
    assert card_b["steps_done"] == steps
    _assert_same_tensors(ckpt.load_weights(tmp_path / "A" / ckpt.WEIGHTS),
                         ckpt.load_weights(tmp_path / "B" / ckpt.WEIGHTS))
    # training changed the weights (the equality above is not that of two untouched models)
    fresh = _model(kind, **hp).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in a.model.state_dict().items())
    if kind == "syndiff":
        assert a.ema and set(k.split(".")[0] for k in a.ema) == set(a.model.ema_modules)


def test_settings_seed_fixes_the_training_randomness(tmp_path):
    def train(name: str, global_seed: int, seed: int) -> dict:
        model = _model("syndiff")
        torch.manual_seed(global_seed)          # whatever ran before the trainer
        Trainer(model, _sampler(), _settings(steps=2, seed=seed), tmp_path / name,
                _card("syndiff")).fit()
        return model.state_dict()

    a, b, c = train("a", 1, 42), train("b", 2, 42), train("c", 1, 43)
    _assert_same_tensors(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_refuses_another_configuration(tmp_path):
    Trainer(_model("cyclegan"), _sampler(), _settings(steps=2), tmp_path,
            _card("cyclegan")).fit()
    other = Trainer(_model("cyclegan"), _sampler(), _settings(steps=4, resume=True), tmp_path,
                    _card("cyclegan", "cfg-2"))
    with pytest.raises(UsageError, match="another configuration"):
        other.fit()
    assert other.step == 0


def test_resume_without_state_starts_at_zero(tmp_path):
    t = Trainer(_model("cyclegan"), _sampler(), _settings(steps=2, resume=True), tmp_path,
                _card("cyclegan"))
    assert t.fit()["steps_done"] == 2


# --------------------------------------------------------------------------- export and logs


def test_export_and_logs(tmp_path):
    t = Trainer(_model("syndiff"), _sampler(), _settings(steps=5, log_every=2), tmp_path,
                _card("syndiff") | {"extra_field": [1, 2]})
    card = t.fit()
    weights = tmp_path / ckpt.WEIGHTS
    assert weights.is_file() and (tmp_path / ckpt.CARD).is_file()
    on_disk = json.loads((tmp_path / ckpt.CARD).read_text())
    assert on_disk == card
    assert card["weights_sha256"] == files.sha256_file(weights)
    assert card["steps_done"] == 5 and card["world_size"] == 1
    assert card["format_version"] == 1 and card["extra_field"] == [1, 2]
    assert card["ema_decay"] == preset("syndiff", "tiny")["ema_decay"]
    loaded_card, tensors = ckpt.load_model_dir(tmp_path)
    assert loaded_card == card
    # inference networks only, with the EMA weights applied
    assert {k.split(".")[0] for k in tensors} == set(t.model.export_modules())
    ema_keys = [k for k in t.ema if k.startswith("gen_diff_pet.")]
    assert ema_keys
    params = dict(t.model.named_parameters())
    for k in ema_keys:
        assert torch.equal(tensors[k], t.ema[k])
    assert any(not torch.equal(tensors[k], params[k].detach()) for k in ema_keys)

    with open(tmp_path / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [2, 4, 5]     # every log_every, and the last
    for key in ("G", "D", "lr_G", "lr_D", "seconds"):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    # cosine schedule: the last logged LR is the floor
    hp = preset("syndiff", "tiny")
    assert float(rows[-1]["lr_G"]) == pytest.approx(hp["lr_min"])
    assert not (tmp_path / "validation_log.csv").exists()
    assert ckpt.load_training_state(tmp_path)["step"] == 5


def test_validation_runs_with_ema_weights_and_is_logged(tmp_path):
    seen = []

    def validate(model):
        seen.append({k: v.clone() for k, v in model.gen_diff_pet.state_dict().items()})
        assert not model.training
        return {"score": float(len(seen))}

    t = Trainer(_model("syndiff"), _sampler(), _settings(steps=4, val_every=2), tmp_path,
                _card("syndiff"), validate)
    card = t.fit()
    assert len(seen) == 2                                   # at step 2 and at the end
    assert t.model.training
    for k, v in seen[-1].items():
        if f"gen_diff_pet.{k}" in t.ema:
            assert torch.equal(v, t.ema[f"gen_diff_pet.{k}"])
    assert card["validation"] == {"step": 4, "score": 2.0}
    with open(tmp_path / "validation_log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [2, 4]


# --------------------------------------------------------------------------- data parallel

_DDP_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_trainer import _card, _model, _sampler
    from pseudopet_bids.train.trainer import Trainer, TrainSettings, _Distributed

    def digest(model):
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    out = Path(sys.argv[1])
    dist = _Distributed("cpu")
    # each rank starts from different weights: the trainer must broadcast rank 0's
    model = _model("cyclegan", seed=dist.rank)
    start = digest(model)
    sampler = _sampler(rank=dist.rank, world=dist.world_size)
    settings = TrainSettings(steps=3, batch_size=2, device="cpu", checkpoint_every=10 ** 6)
    trainer = Trainer(model, sampler, settings, out / "model", _card("cyclegan"), dist=dist)
    card = trainer.fit()
    (out / f"rank{{dist.rank}}.json").write_text(json.dumps(
        {{"rank": dist.rank, "world": dist.world_size, "start": start, "end": digest(model),
          "steps": trainer.step, "card_world": card.get("world_size")}}))
""")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_parallel_gloo_ranks_stay_identical(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    for rank, (code, log) in enumerate(_run_ranks(script, tmp_path, timeout=60)):
        assert code == 0, f"rank {rank} failed (exit {code}):\n{log[-3000:]}"
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in res] == [2, 2] and [r["steps"] for r in res] == [3, 3]
    assert res[0]["start"] != res[1]["start"]               # the ranks began apart ...
    assert res[0]["end"] == res[1]["end"]                   # ... and end identical
    assert res[0]["end"] != res[0]["start"]                 # training happened
    # only rank 0 writes the model folder
    card = json.loads((tmp_path / "model" / ckpt.CARD).read_text())
    assert card["world_size"] == 2 and card["steps_done"] == 3
    weights = ckpt.load_weights(tmp_path / "model" / ckpt.WEIGHTS)
    assert weights and {k.split(".")[0] for k in weights} == {"g_mri2pet"}
    assert card["weights_sha256"] == files.sha256_file(tmp_path / "model" / ckpt.WEIGHTS)


def test_ema_warm_up_follows_the_weights_early(tmp_path):
    """After one step the EMA is mostly the new weights (decay 1/10), not the initial ones."""
    model = _model("syndiff")
    init = {k: v.detach().clone() for k, v in model.named_parameters()
            if k.startswith("gen_diff_pet.")}
    t = Trainer(model, _sampler(), _settings(steps=1), tmp_path, _card("syndiff"))
    t.fit()
    params = dict(t.model.named_parameters())
    moved = [k for k in init if not torch.equal(init[k], params[k].detach())]
    assert moved
    for k in moved[:20]:
        expected = 0.1 * init[k] + 0.9 * params[k].detach()
        assert torch.allclose(t.ema[k], expected, atol=1e-6), k


# --------------------------------------------------------------------------- GPU paths (mocked)


def test_only_the_own_gpus_rng_state_is_saved_and_restored(tmp_path, monkeypatch):
    """A rank on cuda:1 saves and restores the RNG state of cuda:1 only: the *_all functions
    create a context on every visible GPU and restore rank 0's streams everywhere."""
    t = Trainer(_model("cyclegan"), _sampler(), _settings(steps=1), tmp_path, _card("cyclegan"))

    def forbidden(*args, **kwargs):
        raise AssertionError("the state of every visible GPU was touched")

    calls: list[tuple[str, torch.device]] = []
    fake_state = torch.arange(8, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", forbidden)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", forbidden)
    monkeypatch.setattr(torch.cuda, "get_rng_state",
                        lambda device="cuda": calls.append(("get", device)) or fake_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device="cuda": calls.append(("set", device)))
    t.device = torch.device("cuda:1")
    rng = t._rng_state()
    assert calls == [("get", torch.device("cuda:1"))] and len(rng["cuda"]) == 1
    t._set_rng_state(rng)
    assert calls[-1] == ("set", torch.device("cuda:1"))
    # a state written by an earlier version (every visible GPU's): this device's is restored
    calls.clear()
    t._set_rng_state({"torch": rng["torch"], "cuda": [fake_state] * 4})
    assert calls == [("set", torch.device("cuda:1"))]
    # on the CPU no CUDA state at all
    t.device = torch.device("cpu")
    calls.clear()
    assert t._rng_state()["cuda"] == [] and not calls


class _OOMOnce:
    """Wraps ``model.phase_loss``: CUDA out of memory the first time ``phase`` runs with more
    than one slice per micro-batch; records every call (phase, micro-batch size)."""

    def __init__(self, model, phase: str):
        self.inner, self.phase, self.calls, self.fired = model.phase_loss, phase, [], False
        model.phase_loss = self

    def __call__(self, phase, batch, ctx, step):
        self.calls.append((phase, len(batch["mri"])))
        if phase == self.phase and not self.fired and len(batch["mri"]) > 1:
            self.fired = True
            torch.rand(5)                            # the failed attempt drew random numbers
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(phase, batch, ctx, step)


def _steps_taken(trainer: Trainer) -> dict[str, set[int]]:
    return {name: {int(s["step"]) for s in opt.state.values()}
            for name, opt in trainer.optimizers.items()}


@pytest.mark.parametrize("kind, failing", [("syndiff", "G"), ("cyclegan", "D")])
def test_out_of_memory_retries_only_the_failed_phase(kind, failing, tmp_path):
    """SynDiff runs D then G: an OOM in G used to re-run D (its optimizer stepped twice and its
    scheduler ran ahead). CycleGAN's D uses the fakes G left per micro-batch: they are cut to
    the new micro-batches."""
    model = _model(kind)
    oom = _OOMOnce(model, failing)
    t = Trainer(model, _sampler(batch=2), _settings(steps=2), tmp_path, _card(kind))
    t.fit()
    assert oom.fired and t.accumulate == 2
    first = [p for p, _ in oom.calls]
    order = [ph.name for ph in t.phases]
    # step 0: the phases before the failing one once, the failing one twice (2 slices that
    # failed, then 2 micro-batches of 1), then the rest; step 1 with 2 micro-batches each
    done = order[:order.index(failing)]
    assert first[:len(done)] == done
    assert oom.calls[len(done)] == (failing, 2)
    assert oom.calls[len(done) + 1:len(done) + 3] == [(failing, 1), (failing, 1)]
    assert _steps_taken(t) == {name: {2} for name in order}   # each optimizer: 2 steps
    assert {s.last_epoch for s in t.schedulers.values()} == {2}


def test_out_of_memory_retry_draws_the_same_random_numbers(tmp_path):
    """The retried phase starts from the RNG state the failed attempt started from."""
    seen = []

    def run(name: str, oom: bool) -> None:
        model = _model("syndiff")
        inner = model.phase_loss

        def loss(phase, batch, ctx, step):
            if phase == "G":
                seen.append((name, torch.get_rng_state().clone()))
            if oom and phase == "G" and len(batch["mri"]) > 1:
                torch.rand(7)
                raise torch.cuda.OutOfMemoryError("simulated")
            return inner(phase, batch, ctx, step)

        model.phase_loss = loss
        Trainer(model, _sampler(batch=2), _settings(steps=1), tmp_path / name,
                _card("syndiff")).fit()

    run("oom", True)
    states = [s for n, s in seen if n == "oom"]
    assert torch.equal(states[0], states[1])     # the failed attempt and the retry


def test_out_of_memory_with_one_slice_per_micro_batch_stops_clearly(tmp_path):
    model = _model("syndiff")

    def loss(*args):
        raise torch.cuda.OutOfMemoryError("simulated")

    model.phase_loss = loss
    t = Trainer(model, _sampler(batch=2), _settings(steps=1), tmp_path, _card("syndiff"))
    with pytest.raises(ProcessingError, match="even with one slice per micro-batch"):
        t.fit()
    assert t.accumulate == 2


def test_resume_keeps_the_channels_last_layout_of_optimizer_and_ema(tmp_path):
    """The saved state is contiguous; resumed, Adam's moments and the EMA must again have the
    layout of their (channels-last) parameters, or the fused/foreach kernels leave their fast
    path after every resume."""
    with pytest.raises(_Interrupted):
        Trainer(_model("syndiff"), _InterruptAt(_sampler(), 2),
                _settings(steps=4, checkpoint_every=2), tmp_path, _card("syndiff")).fit()
    t = Trainer(_model("syndiff"), _sampler(), _settings(steps=4, resume=True), tmp_path,
                _card("syndiff"))
    t.load_state(ckpt.load_training_state(tmp_path))
    params = dict(t.model.named_parameters())
    four_d = [k for k, p in params.items() if p.dim() == 4 and min(p.shape[2:]) > 1
              and k.split(".")[0] in t.channels_last]
    assert four_d and all(params[k].is_contiguous(memory_format=torch.channels_last)
                          for k in four_d)
    checked = 0
    for opt in t.optimizers.values():
        for group in opt.param_groups:
            for p in group["params"]:
                for key in ("exp_avg", "exp_avg_sq"):
                    value = opt.state[p][key]
                    assert value.stride() == p.stride(), key
                    checked += p.is_contiguous(memory_format=torch.channels_last) \
                        and not p.is_contiguous()
    assert checked
    for k in four_d:
        if k in t.ema:
            assert t.ema[k].stride() == params[k].stride(), k


_RANKS_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_trainer import _InterruptAt, _card, _model, _sampler
    from pseudopet_bids.train.trainer import Trainer, TrainSettings, _Distributed

    def digest(tensors):
        h = hashlib.sha256()
        for t in tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    out, mode = Path(sys.argv[1]), sys.argv[2]
    dist = _Distributed("cpu")
    model = _model("cyclegan", pool_size=3)
    inner, first = model.phase_loss, []

    def phase_loss(phase, batch, ctx, step):
        if not first:
            first.append(digest([torch.get_rng_state()]))
        return inner(phase, batch, ctx, step)

    model.phase_loss = phase_loss
    sampler = _sampler(rank=dist.rank, world=dist.world_size)
    if mode == "cut":
        sampler = _InterruptAt(sampler, 2)
    settings = TrainSettings(steps=4, batch_size=2, device="cpu", checkpoint_every=2,
                             resume=mode == "resume")
    trainer = Trainer(model, sampler, settings, out / mode.replace("cut", "resume"),
                      _card("cyclegan"), dist=dist)
    trainer.fit()
    (out / f"{{mode}}{{dist.rank}}.json").write_text(json.dumps(
        {{"first_rng": first[0], "end": digest(v for _, v in sorted(model.state_dict().items())),
          "rng": digest([torch.get_rng_state()]),
          "pool": digest([model.pool_pet.images])}}))
""")


def _run_ranks(script: Path, *args: object, timeout: float = 120) -> list[tuple[int, str]]:
    """Run ``script ARGS`` as ranks 0 and 1 of a 2-process gloo group; (exit code, output)."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                                      cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
        return [(p.returncode, log) for p, log in zip(procs, logs)]
    finally:
        for p in procs:
            p.kill()


@pytest.mark.slow  # three 2-process runs: about 80 s on a busy 2-core VM
def test_ranks_draw_their_own_randomness_and_resume_exactly(tmp_path):
    """seed + rank: each rank draws other noise (and fills its own image pool); the ranks'
    weights stay identical; interrupted and resumed, every rank continues its own random
    stream and pool, so the result is the uninterrupted one."""
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS_SCRIPT.format(tests=str(Path(__file__).parent)))
    for mode in ("full", "cut", "resume"):
        results = _run_ranks(script, tmp_path, mode)
        if mode != "cut":
            for rank, (code, log) in enumerate(results):
                assert (tmp_path / f"{mode}{rank}.json").is_file(), f"rank {rank}:\n{log[-3000:]}"
    full = [json.loads((tmp_path / f"full{r}.json").read_text()) for r in (0, 1)]
    resumed = [json.loads((tmp_path / f"resume{r}.json").read_text()) for r in (0, 1)]
    assert full[0]["first_rng"] != full[1]["first_rng"]      # seed + rank
    assert full[0]["pool"] != full[1]["pool"]                # each rank its own fakes
    assert full[0]["end"] == full[1]["end"]                  # weights stay identical
    for rank in (0, 1):                                      # resume == uninterrupted
        for key in ("end", "rng", "pool"):
            assert resumed[rank][key] == full[rank][key], (rank, key)


def test_process_group_gets_an_explicit_timeout(monkeypatch):
    import torch.distributed as tdist

    from pseudopet_bids.train import trainer as trainer_mod

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(tdist, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    d = trainer_mod._Distributed("cpu")
    assert seen == {"backend": "gloo", "timeout": trainer_mod.PROCESS_GROUP_TIMEOUT}
    assert d.rank == 1 and d.owned
    assert trainer_mod.PROCESS_GROUP_TIMEOUT.total_seconds() > 600   # NCCL's default: 10 min


_MAIN_FIRST_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from datetime import timedelta
    from pathlib import Path
    from pseudopet_bids.train.trainer import _Distributed

    out = Path(sys.argv[1])
    # collectives time out after 2 s here; rank 0's work takes 6 s
    dist = _Distributed("cpu", timeout=timedelta(seconds=2))
    order = []

    def work():
        if dist.main:
            time.sleep(6)
        order.append(time.time())
        return dist.rank

    got = dist.main_first("slow preparation", work)
    ranks = dist.gather(got)                  # both ranks are still in the process group
    (out / f"rank{dist.rank}.json").write_text(json.dumps({"ranks": ranks, "t": order[0]}))
    dist.close()
""")


@pytest.mark.slow  # two processes importing torch: about 20 s on a busy 2-core VM
def test_other_ranks_wait_for_rank_0_beyond_the_collective_timeout(tmp_path):
    """Rank 0 preprocesses longer than the process group's timeout while the others wait on
    the store (a barrier there aborted the job after NCCL's 10 minutes)."""
    script = tmp_path / "main_first.py"
    script.write_text(_MAIN_FIRST_SCRIPT)
    results = _run_ranks(script, tmp_path, "")
    for rank, (code, log) in enumerate(results):
        assert code == 0, f"rank {rank} failed:\n{log[-3000:]}"
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert res[0]["ranks"] == res[1]["ranks"] == [0, 1]
    assert res[1]["t"] >= res[0]["t"]          # rank 1 ran its part after rank 0's



# --------------------------------------------------------------------------- speed


def test_channels_last_only_for_networks_without_instance_norm(tmp_path):
    """Instance norm returns NCHW for NHWC input (so every convolution around it converted
    layouts): the ResNet generators and PatchGANs stay NCHW, SynDiff's diffusive networks
    (group norm) go channels-last."""
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    assert not torch.nn.InstanceNorm2d(8)(x).is_contiguous(memory_format=torch.channels_last)
    t = Trainer(_model("syndiff"), _sampler(), _settings(steps=1), tmp_path, _card("syndiff"))
    assert set(t.channels_last) == {"gen_diff_pet", "gen_diff_mri", "disc_diff_pet",
                                    "disc_diff_mri"}
    c = Trainer(_model("cyclegan"), _sampler(), _settings(steps=1), tmp_path / "c",
                _card("cyclegan"))
    assert c.channels_last == []
    conv = t.model.gen_diff_pet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


@pytest.mark.parametrize("kind", ["cyclegan", "syndiff"])
def test_losses_do_not_read_values_from_the_device(kind, monkeypatch):
    """Every ``.item()`` (or bool/float of a tensor) waits for the GPU: the losses keep their
    logged values on the device."""
    model = _model(kind)
    batch = {k: torch.from_numpy(v) for k, v in _sampler().batch(0).items()}

    def sync(self, *args):
        raise AssertionError("a value was read from the device")

    for name in ("item", "__bool__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    ctx: dict = {}
    for phase in model.phases():
        loss, logs = model.phase_loss(phase.name, batch, ctx, 1)
        assert all(isinstance(v, torch.Tensor) for v in logs.values())
    monkeypatch.undo()


def test_losses_are_read_once_per_logging_interval_and_non_finite_stops(tmp_path):
    t = Trainer(_model("syndiff"), _sampler(), _settings(steps=4, log_every=2), tmp_path,
                _card("syndiff"))
    reads = []
    inner = t._check_finite
    t._check_finite = lambda window: reads.append(len(window.get("G", []))) \
        or inner(window)
    t.fit()
    assert reads == [2, 2]                                   # steps 2 and 4, two steps each
    model = _model("syndiff")
    inner_loss = model.phase_loss

    def nan_loss(phase, batch, ctx, step):
        loss, logs = inner_loss(phase, batch, ctx, step)
        return (loss * float("nan") if step == 2 else loss), logs

    model.phase_loss = nan_loss
    bad = Trainer(model, _sampler(), _settings(steps=6, log_every=2, checkpoint_every=3),
                  tmp_path / "nan", _card("syndiff"))
    with pytest.raises(ProcessingError, match="loss became nan between steps 3 and 3"):
        bad.fit()
    # the checkpoint at step 3 was refused: the last one on disk is none
    assert not (tmp_path / "nan" / ckpt.STATE_DIR / "training_state.json").exists()


def test_checkpoint_is_a_snapshot_written_in_the_background(tmp_path, monkeypatch):
    """Training goes on while the checkpoint is written: what is written is the state at the
    checkpoint's step, not weights changed since."""
    t = Trainer(_model("cyclegan"), _sampler(), _settings(steps=4, checkpoint_every=2),
                tmp_path, _card("cyclegan"))
    import threading

    release, written, at_step2 = threading.Event(), [], {}
    save = ckpt.save_training_state

    def slow_save(model_dir, state):
        if not written:
            assert release.wait(60)              # held until training went on
        written.append(state["step"])
        save(model_dir, state)

    monkeypatch.setattr(ckpt, "save_training_state", slow_save)
    inner = t._train_step

    def step(batch):
        if t.step == 2:
            at_step2.update({k: v.clone() for k, v in t.model.state_dict().items()})
        out = inner(batch)
        if t.step == 3:
            release.set()                        # step 3 ran while the write was pending
        return out

    t._train_step = step
    t.fit()
    assert written == [2, 4]
    first = json.loads((tmp_path / ckpt.STATE_DIR / "training_state.json").read_text())
    assert first["skeleton"]["step"] == 4
    # the first write held the weights of step 2 although the model changed meanwhile
    moved = [k for k, v in at_step2.items() if not torch.equal(v, t.model.state_dict()[k])]
    assert moved


def test_compile_switch_compiles_the_phase_networks(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **kw: compiled.append((type(self).__name__, kw)))
    t = Trainer(_model("syndiff"), _sampler(), _settings(steps=1, compile=True), tmp_path,
                _card("syndiff"))
    names = [m for ph in t.phases for m in ph.modules]
    assert len(compiled) == len(names) == 8
    assert all(kw == {"backend": "inductor"} for _, kw in compiled)
    monkeypatch.undo()
    compiled.clear()
    Trainer(_model("syndiff"), _sampler(), _settings(steps=1), tmp_path / "b", _card("syndiff"))
    assert not compiled                                      # off by default


@pytest.mark.slow  # compiling the tiny SynDiff: about 2 minutes on a busy 2-core VM
def test_compiled_training_keeps_the_r1_pass_eager(tmp_path, monkeypatch):
    """AOTAutograd (what ``torch.compile`` uses) has no double backward: the discriminator's
    R1 pass on the lazy steps runs eagerly, the rest compiled; step 0 is a lazy step."""
    from pseudopet_bids.train import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "COMPILE_BACKEND", "aot_eager")  # no C++ compiler needed
    t = Trainer(_model("syndiff"), _sampler(), _settings(steps=2, compile=True), tmp_path,
                _card("syndiff"))
    t.fit()
    row = t.log_rows[-1]
    assert row["step"] == 2 and "R1_pet" in row and math.isfinite(row["G"])
