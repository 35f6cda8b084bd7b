"""Loading trained-model folders and translating model-grid volumes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pseudopet_bids.io import files
from pseudopet_bids.errors import InputError
from pseudopet_bids.models import checkpoint as ckpt
from pseudopet_bids.models.presets import card_hparams, preset
from pseudopet_bids.models.registry import build_model
from pseudopet_bids.synthesis.apply import TrainedModel, load_trained, translate_volume
from pseudopet_bids.synthesis.modelspace import SCALING
from pseudopet_bids.train.data import SliceSet, UnpairedSampler, context_slices
from pseudopet_bids.train.trainer import Trainer, TrainSettings

CPU = torch.device("cpu")
BRAIN_Z = range(9, 15)


def _card(kind: str, hp: dict, context: int, sha: str) -> dict:
    """A card with the fields train/workflow.py writes that synthesis reads."""
    return {"model": kind, "preset": "tiny",
            "hparams": card_hparams({k: v for k, v in hp.items()
                                     if k not in ("steps", "batch_size")}),
            "context_slices": context, "scaling": SCALING, "weights_sha256": sha,
            "format_version": ckpt.CARD_FORMAT_VERSION, "config_hash": "test"}


def _export(kind: str, model_dir: Path, context: int = 0, seed: int = 0,
            modules: str = "export", **hparams):
    """Build a tiny model and write its weights (``modules``: the trainer's ``export`` set,
    or ``inference`` only, as earlier releases wrote) and card; returns the model."""
    hp = {**preset(kind, "tiny"), **hparams}
    torch.manual_seed(seed)
    model = build_model(kind, hp, 2 * context + 1)
    keep = model.export_modules() if modules == "export" else model.inference_modules()
    tensors = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in keep}
    sha = ckpt.save_weights(model_dir / ckpt.WEIGHTS, tensors)
    ckpt.write_card(model_dir, _card(kind, hp, context, sha))
    return model.eval()


def _volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A scaled T1w on the tiny grid with brain in a few slices only."""
    shape = preset("cyclegan", "tiny")["grid"].shape
    mask = np.zeros(shape, bool)
    mask[6:26, 8:32, BRAIN_Z.start:BRAIN_Z.stop] = True
    mri = np.where(mask, rng.uniform(-1, 1, shape), -1.0).astype(np.float32)
    return mri, mask


def _in_memory(model, context: int) -> TrainedModel:
    return TrainedModel(model, {}, Path("."), preset(model.kind, "tiny")["grid"], context)


# --------------------------------------------------------------------------- loading


def test_syndiff_source_cycle_conditions_on_the_cycled_t1w(tmp_path, rng):
    real = _export("syndiff", tmp_path / "real", modules="inference")  # an earlier release's
    cycle = _export("syndiff", tmp_path / "cycle", source="cycle")
    assert load_trained(tmp_path / "real", CPU).model.source == "real"
    trained = load_trained(tmp_path / "cycle", CPU)
    assert {k.split(".")[0] for k, _ in trained.model.named_parameters()} == {
        "gen_diff_pet", "gen_nd_mri2pet", "gen_nd_pet2mri"}
    mri, mask = _volume(rng)
    got, _ = translate_volume(trained, mri, mask, CPU, 1, seed=2)
    want, _ = translate_volume(_in_memory(cycle, 0), mri, mask, CPU, 1, seed=2)
    np.testing.assert_array_equal(got, want)
    other, _ = translate_volume(_in_memory(real, 0), mri, mask, CPU, 1, seed=2)
    assert not np.array_equal(got, other)  # same weights and noise, another source
    with pytest.raises(ValueError, match="source"):
        build_model("syndiff", {**preset("syndiff", "tiny"), "source": "nd"}, 1)


@pytest.mark.parametrize("kind,context", [("cyclegan", 0), ("cyclegan", 1), ("syndiff", 0),
                                          ("syndiff", 1)])
def test_loaded_model_translates_like_the_in_memory_one(kind, context, tmp_path, rng):
    model = _export(kind, tmp_path, context)
    trained = load_trained(tmp_path, CPU)
    assert trained.context == context and trained.name == kind
    assert trained.grid == preset(kind, "tiny")["grid"]
    assert trained.sha256 == files.sha256_file(tmp_path / ckpt.WEIGHTS)
    assert not trained.model.training
    # training-only networks are dropped
    params = {k.split(".")[0] for k, _ in trained.model.named_parameters()}
    assert params == set(model.inference_modules())

    mri, mask = _volume(rng)
    got, got_std = translate_volume(trained, mri, mask, CPU, 1, seed=4)
    want, _ = translate_volume(_in_memory(model, context), mri, mask, CPU, 1, seed=4)
    assert got_std is None
    assert got.shape == mri.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    # slices without brain are background; translated ones are not
    outside = [z for z in range(mri.shape[2]) if z not in BRAIN_Z]
    assert np.all(got[:, :, outside] == -1.0)
    assert all(np.any(got[:, :, z] != -1.0) for z in BRAIN_Z)
    assert np.all(np.abs(got) <= 1.0)


def test_cyclegan_volume_is_the_slice_wise_translation(tmp_path, rng):
    model = _export("cyclegan", tmp_path, context=1)
    trained = load_trained(tmp_path, CPU)
    mri, mask = _volume(rng)
    out, _ = translate_volume(trained, mri, mask, CPU)
    for z in (BRAIN_Z.start, BRAIN_Z.stop - 1):              # edge slices: replicated context
        x = torch.from_numpy(context_slices(mri, z, 1)[None])
        np.testing.assert_allclose(out[:, :, z], model.translate(x)[0, 1].numpy(), atol=1e-6)
    # the batch size changes nothing for a deterministic model, and n_samples is ignored
    small, _ = translate_volume(trained, mri, mask, CPU, batch_size=4)
    many, std = translate_volume(trained, mri, mask, CPU, n_samples=3, seed=9)
    np.testing.assert_allclose(small, out, atol=1e-6)
    np.testing.assert_array_equal(many, out)
    assert std is None


def test_syndiff_samples_give_a_std_map(tmp_path, rng):
    _export("syndiff", tmp_path)
    trained = load_trained(tmp_path, CPU)
    mri, mask = _volume(rng)
    one_a, _ = translate_volume(trained, mri, mask, CPU, 1, seed=1)
    one_b, _ = translate_volume(trained, mri, mask, CPU, 1, seed=1)
    one_c, _ = translate_volume(trained, mri, mask, CPU, 1, seed=2)
    np.testing.assert_array_equal(one_a, one_b)
    assert not np.array_equal(one_a, one_c)
    mean, std = translate_volume(trained, mri, mask, CPU, 3, seed=1)
    assert std is not None and std.shape == mri.shape and std.dtype == np.float32
    inside = std[:, :, BRAIN_Z.start:BRAIN_Z.stop]
    assert np.all(inside >= 0) and np.mean(inside > 0) > 0.9
    outside = [z for z in range(mri.shape[2]) if z not in BRAIN_Z]
    assert np.all(std[:, :, outside] == 0) and np.all(mean[:, :, outside] == -1.0)
    # the first sample of the three is the single-sample output: the mean differs from it
    assert not np.array_equal(mean, one_a)
    again, std_again = translate_volume(trained, mri, mask, CPU, 3, seed=1)
    np.testing.assert_array_equal(again, mean)
    np.testing.assert_array_equal(std_again, std)


def test_trainer_export_loads_with_the_ema_weights(tmp_path, rng):
    """A SynDiff folder written by the trainer holds the EMA weights that validation used."""
    vols = [rng.uniform(-1, 1, (32, 40, 4)).astype(np.float32)]
    masks = [np.ones((32, 40, 4), bool)]
    sampler = UnpairedSampler({"mri": SliceSet(vols, masks), "pet": SliceSet(vols, masks)},
                              2, 0)
    hp = preset("syndiff", "tiny")
    torch.manual_seed(0)
    model = build_model("syndiff", hp, 1)
    card = _card("syndiff", hp, 0, "")
    del card["weights_sha256"], card["format_version"]
    trainer = Trainer(model, sampler, TrainSettings(steps=2, batch_size=2, device="cpu"),
                      tmp_path, card)
    trainer.fit()
    trained = load_trained(tmp_path, CPU)
    mri, mask = _volume(rng)
    got, _ = translate_volume(trained, mri, mask, CPU, 1, seed=3)
    model.eval()
    with trainer.ema_weights():
        want, _ = translate_volume(_in_memory(model, 0), mri, mask, CPU, 1, seed=3)
    raw, _ = translate_volume(_in_memory(model, 0), mri, mask, CPU, 1, seed=3)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, raw, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- refusals


def test_other_scaling_is_refused(tmp_path):
    _export("cyclegan", tmp_path)
    card = json.loads((tmp_path / ckpt.CARD).read_text())
    card["scaling"] = {**card["scaling"], "pet_max": 3.0}
    (tmp_path / ckpt.CARD).write_text(json.dumps(card))
    with pytest.raises(InputError, match="intensity scaling") as err:
        load_trained(tmp_path, CPU)
    assert err.value.path == tmp_path / ckpt.CARD
    del card["scaling"]
    (tmp_path / ckpt.CARD).write_text(json.dumps(card))
    with pytest.raises(InputError, match="intensity scaling"):
        load_trained(tmp_path, CPU)


def test_weights_missing_a_tensor_are_refused(tmp_path):
    _export("syndiff", tmp_path)
    path = tmp_path / ckpt.WEIGHTS
    tensors = ckpt.load_weights(path)
    dropped = sorted(tensors)[3]
    del tensors[dropped]
    card = json.loads((tmp_path / ckpt.CARD).read_text())
    card["weights_sha256"] = ckpt.save_weights(path, tensors)   # a consistent, wrong folder
    (tmp_path / ckpt.CARD).write_text(json.dumps(card))
    with pytest.raises(InputError, match="1 missing") as err:
        load_trained(tmp_path, CPU)
    assert err.value.path == path
    assert ckpt.WEIGHTS in str(err.value) and dropped in str(err.value)


def test_wrong_shapes_are_refused(tmp_path):
    _export("cyclegan", tmp_path, context=1)                  # 3-channel weights ...
    card = json.loads((tmp_path / ckpt.CARD).read_text())
    card["context_slices"] = 0                                  # ... for a 1-channel model
    (tmp_path / ckpt.CARD).write_text(json.dumps(card))
    with pytest.raises(InputError, match="architecture") as err:
        load_trained(tmp_path, CPU)
    assert err.value.path == tmp_path / ckpt.WEIGHTS


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickled_weights_are_refused(tmp_path, writer):
    model = _export("cyclegan", tmp_path)
    path = tmp_path / ckpt.WEIGHTS
    state = model.g_mri2pet.state_dict()
    if writer == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps({k: v.numpy() for k, v in state.items()}, protocol=4))
    with pytest.raises(InputError, match="pickle") as err:
        load_trained(tmp_path, CPU)
    assert err.value.path == path


def test_tampered_weights_are_refused(tmp_path):
    _export("cyclegan", tmp_path)
    path = tmp_path / ckpt.WEIGHTS
    tensors = ckpt.load_weights(path)
    key = sorted(tensors)[0]
    tensors[key] = tensors[key] + 1
    ckpt.save_weights(path, tensors)                            # card not updated
    with pytest.raises(InputError, match="do not match"):
        load_trained(tmp_path, CPU)


def test_out_of_memory_retry_keeps_the_noise_sequence(rng):
    """A batch that runs out of CUDA memory has drawn noise before it failed: the retry with
    half the batch continues from the noise state before it, as a run that used the smaller
    batch from the start."""
    model = build_model("syndiff", preset("syndiff", "tiny"), 1).eval()
    mri, mask = _volume(rng)
    inner = model.translate
    failed = []

    def translate(x, gen=None):
        if len(x) > 2 and not failed:
            failed.append(len(x))
            inner(x[:1], gen)                  # draws noise, then fails
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return inner(x, gen)

    model.translate = translate
    got, _ = translate_volume(_in_memory(model, 0), mri, mask, CPU, 1, seed=3, batch_size=4)
    assert failed == [4]
    model.translate = inner
    want, _ = translate_volume(_in_memory(model, 0), mri, mask, CPU, 1, seed=3, batch_size=2)
    np.testing.assert_array_equal(got, want)
