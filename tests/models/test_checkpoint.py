"""Trained-model folders: safetensors weights, model card, pickle-free training state."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import pickle
import random
import re
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from pseudopet_bids import provenance
from pseudopet_bids.io import files
from pseudopet_bids.errors import InputError, UsageError
from pseudopet_bids.models import checkpoint as ck


def _weights() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, generator=gen),
            "bf16": torch.randn(5, generator=gen).to(torch.bfloat16),
            "rng": torch.get_rng_state(),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 7),
            "flags": torch.tensor([True, False])}


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b)


def _assert_tree_equal(a, b) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        _assert_same(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_tree_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_tree_equal(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def _roundtrip(obj, tmp_path: Path):
    """flatten -> safetensors + JSON text -> unflatten, as save/load_training_state do."""
    tensors, skeleton = ck.flatten_state(obj)
    ck.save_weights(tmp_path / "t.safetensors", tensors)
    skeleton = json.loads(json.dumps(skeleton, allow_nan=False))
    return ck.unflatten_state(ck.load_weights(tmp_path / "t.safetensors"), skeleton)


# --------------------------------------------------------------------------- weights


def test_weights_round_trip_and_sha(tmp_path):
    weights = _weights()
    path = tmp_path / "m" / ck.WEIGHTS
    digest = ck.save_weights(path, weights, metadata={"model": "cyclegan"})
    assert digest == files.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = ck.load_weights(path)
    assert list(sorted(loaded)) == sorted(weights)
    for name, tensor in weights.items():
        _assert_same(loaded[name], tensor)
    assert not list(tmp_path.glob("m/.*.tmp"))


def test_save_weights_handles_shared_and_noncontiguous(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    tied = {"a": base, "b": base, "view": base[1], "t": base.t(),
            "grad": torch.ones(2, requires_grad=True) * 3}
    path = tmp_path / ck.WEIGHTS
    ck.save_weights(path, tied)
    loaded = ck.load_weights(path)
    for name, tensor in tied.items():
        _assert_same(loaded[name], tensor.detach())
    base += 1  # the saved copies must not alias the caller's memory
    assert loaded["a"][0, 0] == 0


def test_save_weights_is_deterministic(tmp_path):
    assert ck.save_weights(tmp_path / "a", _weights()) == ck.save_weights(tmp_path / "b",
                                                                          _weights())


def test_pickled_checkpoint_refused_without_unpickling(tmp_path):
    legacy = tmp_path / "legacy.pt"
    modern = tmp_path / "modern.pt"
    torch.save(_weights(), legacy, _use_new_zipfile_serialization=False)
    torch.save(_weights(), modern)
    assert legacy.read_bytes()[:1] == b"\x80" and modern.read_bytes()[:4] == b"PK\x03\x04"
    with mock.patch("pickle.load") as p_load, mock.patch("pickle.loads") as p_loads, \
            mock.patch("torch.load") as t_load:
        for path in (legacy, modern):
            with pytest.raises(InputError) as info:
                ck.load_weights(path)
            text = str(info.value)
            assert path.name in text
            assert ("this looks like a pickled PyTorch checkpoint; pseudopet never unpickles "
                    "files — convert it to safetensors") in text
        p_load.assert_not_called()
        p_loads.assert_not_called()
        t_load.assert_not_called()


def test_module_never_unpickles():
    source = Path(ck.__file__).read_text()
    assert not re.search(r"^\s*(import|from) (pickle|dill|cloudpickle)\b", source, re.M)
    assert not re.search(r"(?<!safetensors\.)torch\.load\(", source)


def _bad_files(tmp_path: Path) -> dict[str, bytes]:
    good = (tmp_path / "good.safetensors")
    ck.save_weights(good, _weights())
    zipped = tmp_path / "z.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("a.txt", "hello")
    return {"empty.safetensors": b"",
            "short.safetensors": b"\x01\x02\x03",
            "truncated.safetensors": good.read_bytes()[:-10],
            "header-cut.safetensors": good.read_bytes()[:40],
            "random.safetensors": np.random.default_rng(1).bytes(4096),
            "config.json": json.dumps({"model": "cyclegan"}).encode(),
            "archive.zip": zipped.read_bytes(),
            "text.safetensors": b"not weights at all\n"}


def test_invalid_files_refused(tmp_path):
    for name, data in _bad_files(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as info:
            ck.load_weights(path)
        assert name in str(info.value), name
        assert info.value.fix, name
    for name in ("truncated.safetensors", "header-cut.safetensors"):
        assert "truncated" in str(pytest.raises(InputError, ck.load_weights,
                                                tmp_path / name).value)
    assert "JSON" in str(pytest.raises(InputError, ck.load_weights,
                                       tmp_path / "config.json").value)
    assert "empty" in str(pytest.raises(InputError, ck.load_weights,
                                        tmp_path / "empty.safetensors").value)
    missing = pytest.raises(InputError, ck.load_weights, tmp_path / "nope.safetensors").value
    assert "nope.safetensors" in str(missing) and missing.exit_code == 66


def test_header_length_starting_with_pickle_byte_is_accepted(tmp_path):
    # A genuine header length can have 0x80 as its first byte; find one and load it.
    for n in range(1, 400):
        data_path = tmp_path / ck.WEIGHTS
        ck.save_weights(data_path, {"x" * n: torch.zeros(1)})
        if data_path.read_bytes()[0] == 0x80:
            assert list(ck.load_weights(data_path)) == ["x" * n]
            return
    pytest.fail("no header of length 0x..80 produced")


# --------------------------------------------------------------------------- flatten


def test_adam_state_round_trip_resumes_identically(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    clone = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.randn(8, 3)
    for _ in range(2):
        opt.zero_grad()
        model(data).square().mean().backward()
        opt.step()
    clone.load_state_dict(model.state_dict())
    restored = _roundtrip(opt.state_dict(), tmp_path)
    _assert_tree_equal(opt.state_dict(), restored)
    assert set(restored["state"]) == {0, 1, 2, 3}  # int parameter keys survive JSON
    fresh = torch.optim.Adam(clone.parameters(), lr=1e-2)
    fresh.load_state_dict(restored)
    for net, optim in ((model, opt), (clone, fresh)):
        optim.zero_grad()
        net(data).square().mean().backward()
        optim.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_lambda_lr_state_round_trip(tmp_path):
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5 ** epoch)
    for _ in range(3):
        opt.step()
        sched.step()
    state = sched.state_dict()
    restored = _roundtrip(state, tmp_path)
    _assert_tree_equal(state, restored)
    sched2 = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([param], lr=0.1),
                                               lambda epoch: 0.5 ** epoch)
    sched2.load_state_dict(restored)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_rng_states_round_trip(tmp_path):
    torch_state = torch.get_rng_state()
    gen = np.random.default_rng(5)
    gen.random(3)
    np_state = gen.bit_generator.state
    assert np_state["state"]["state"] > 2 ** 64  # a big int JSON must keep exactly
    py_rng = random.Random(7)
    py_state = py_rng.getstate()
    legacy_np = np.random.RandomState(3).get_state()
    state = {"torch": torch_state, "numpy": np_state, "python": py_state, "legacy": legacy_np}
    restored = _roundtrip(state, tmp_path)
    _assert_tree_equal(state, restored)
    assert isinstance(restored["python"], tuple) and isinstance(restored["python"][1], tuple)

    expected = torch.rand(4)
    torch.set_rng_state(restored["torch"])
    assert torch.equal(torch.rand(4), expected)
    gen2 = np.random.default_rng()
    gen2.bit_generator.state = restored["numpy"]
    assert np.array_equal(gen2.random(4), gen.random(4))
    py2 = random.Random()
    py2.setstate(restored["python"])
    assert [py2.random() for _ in range(3)] == [py_rng.random() for _ in range(3)]
    rs = np.random.RandomState()
    rs.set_state(restored["legacy"])
    assert np.array_equal(rs.rand(3), np.random.RandomState(3).rand(3))


def test_nested_structures_round_trip(tmp_path):
    obj = {"steps": 12, "none": None, "name": "small", "nested": [[None, 1, [2.5, "x"]], []],
           "tup": (1, (torch.ones(2), None)), "pool": [torch.randn(1, 1, 4, 4) for _ in range(3)],
           "array": np.arange(6, dtype=np.int16).reshape(2, 3), "np0d": np.array(3.5),
           "npscalar": np.float64(1.25), "npint": np.int64(-3), "bf": torch.ones(3).bfloat16(),
           "empty": torch.zeros(0), "zero_d": torch.tensor(7, dtype=torch.int64),
           "floats": [float("inf"), float("-inf"), float("nan")], "big": 3 ** 90,
           "mixed": {1: "a", "b": 2, (1, "x"): [3]}, "float_key": {0.5: 1, None: 2},
           "fake": {"__tensor__": "not a marker"}, "a.b": torch.zeros(1),
           "a": {"b": torch.ones(1)}, "ema": {"w": torch.arange(4.0).reshape(2, 2).t()}}
    restored = _roundtrip(obj, tmp_path)
    _assert_tree_equal(obj, restored)
    assert restored["array"].flags.writeable
    assert isinstance(restored["npscalar"], np.float64)
    assert _roundtrip({"no tensors": [1, None]}, tmp_path) == {"no tensors": [1, None]}


def test_flatten_rejects_unsupported_objects():
    with pytest.raises(TypeError):
        ck.flatten_state({"f": lambda: 1})
    with pytest.raises(TypeError):
        ck.flatten_state({"s": {1, 2}})


# --------------------------------------------------------------------------- training state


def _state() -> dict:
    torch.manual_seed(1)
    return {"epoch": 3, "step": 120, "ema": {"w": torch.randn(3, 3)},
            "rng": {"torch": torch.get_rng_state(),
                    "numpy": np.random.default_rng(5).bit_generator.state,
                    "python": random.Random(2).getstate()},
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
            "pool": [torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)]}


def test_training_state_round_trip(tmp_path):
    state = _state()
    ck.save_training_state(tmp_path, state)
    doc = json.loads((tmp_path / ck.STATE_DIR / ck.STATE_JSON).read_text())
    assert doc["format_version"] == 1
    assert doc["sha256"] == files.sha256_file(ck.state_tensor_path(tmp_path))
    _assert_tree_equal(state, ck.load_training_state(tmp_path))


def test_training_state_corruption_detected(tmp_path):
    ck.save_training_state(tmp_path, _state())
    tensor_file = ck.state_tensor_path(tmp_path)
    data = bytearray(tensor_file.read_bytes())
    data[-1] ^= 0xFF
    tensor_file.write_bytes(bytes(data))
    with pytest.raises(InputError, match="incomplete or corrupt") as info:
        ck.load_training_state(tmp_path)
    assert "--resume" in str(info.value) and "delete" in str(info.value)
    # A tensor file replaced under its JSON is caught the same way.
    ck.save_training_state(tmp_path, _state())
    tensor_file = ck.state_tensor_path(tmp_path)
    ck.save_weights(tensor_file, {"other": torch.zeros(1)})
    with pytest.raises(InputError, match="incomplete or corrupt"):
        ck.load_training_state(tmp_path)
    tensor_file.unlink()
    with pytest.raises(InputError, match="incomplete or corrupt"):
        ck.load_training_state(tmp_path)
    (tmp_path / ck.STATE_DIR / ck.STATE_JSON).write_text("{trunc")
    with pytest.raises(InputError, match="incomplete or corrupt"):
        ck.load_training_state(tmp_path)


def test_training_state_killed_between_its_two_writes_keeps_the_previous_one(tmp_path,
                                                                           monkeypatch):
    first, second = _state(), {**_state(), "step": 99, "new": torch.ones(2)}
    ck.save_training_state(tmp_path, first)
    # killed after the new tensor file, before the JSON naming it: the previous pair is whole
    monkeypatch.setattr(ck, "atomic_write_text", mock.Mock(side_effect=KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ck.save_training_state(tmp_path, second)
    monkeypatch.undo()
    assert len(list((tmp_path / ck.STATE_DIR).glob("*.safetensors"))) == 2
    _assert_tree_equal(first, ck.load_training_state(tmp_path))
    ck.save_training_state(tmp_path, second)  # the next checkpoint removes the orphan
    assert [ck.state_tensor_path(tmp_path)] == list((tmp_path / ck.STATE_DIR).glob("*.safetensors"))
    assert ck.load_training_state(tmp_path)["step"] == 99
    # a JSON naming a file outside the state folder is refused
    doc = json.loads((tmp_path / ck.STATE_DIR / ck.STATE_JSON).read_text())
    (tmp_path / ck.STATE_DIR / ck.STATE_JSON).write_text(json.dumps({**doc, "tensors":
                                                                     "../weights.safetensors"}))
    with pytest.raises(InputError, match="invalid tensor file"):
        ck.load_training_state(tmp_path)


def test_training_state_missing(tmp_path):
    with pytest.raises(InputError, match="--resume"):
        ck.load_training_state(tmp_path)


# --------------------------------------------------------------------------- card


def _model_dir(tmp_path: Path) -> Path:
    model_dir = tmp_path / "models" / "m1"
    digest = ck.save_weights(model_dir / ck.WEIGHTS, _weights())
    ck.write_card(model_dir, {"format_version": 1, "model": "cyclegan", "preset": "small",
                              "weights_sha256": digest, "config_hash": "abc",
                              "software": provenance.software_versions()})
    return model_dir


def test_card_and_model_dir_round_trip(tmp_path):
    model_dir = _model_dir(tmp_path)
    text = (model_dir / ck.CARD).read_text()
    assert text.index('"config_hash"') < text.index('"format_version"')  # sorted keys
    card, weights = ck.load_model_dir(model_dir)
    assert card["model"] == "cyclegan" and set(card["software"]) == {
        "python", "pseudopet", *provenance.PACKAGES}
    for name, tensor in _weights().items():
        _assert_same(weights[name], tensor)


def test_card_errors(tmp_path):
    model_dir = tmp_path / "m"
    with pytest.raises(InputError, match="no model card") as info:
        ck.read_card(model_dir)
    assert ck.CARD in str(info.value)
    model_dir.mkdir()
    for text, match in (("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object"),
                        ('{"format_version": 1, "model": "cyclegan"}', "preset, weights_sha256"),
                        ('{"format_version": 9, "model": "c", "preset": "s", '
                         '"weights_sha256": "x"}', "not supported")):
        (model_dir / ck.CARD).write_text(text)
        with pytest.raises(InputError, match=match):
            ck.read_card(model_dir)
    with pytest.raises(ValueError):
        ck.write_card(model_dir, {"model": "cyclegan"})


def test_check_compatible(tmp_path):
    model_dir = _model_dir(tmp_path)
    card = ck.read_card(model_dir)
    ck.check_compatible(card, {"model": "cyclegan", "preset": "small"}, model_dir)
    with pytest.raises(UsageError) as info:
        ck.check_compatible(card, {"model": "syndiff", "preset": "small", "config_hash": "zzz",
                                   "seed": 3}, model_dir)
    text = str(info.value)
    assert "model: model has 'cyclegan', requested 'syndiff'" in text
    assert "config_hash: model has 'abc', requested 'zzz'" in text
    assert "seed: model has '<missing>', requested 3" in text
    assert "preset:" not in text
    assert "--model-name" in text and str(model_dir) in text
    assert info.value.exit_code == 64


def test_load_model_dir_sha_mismatch(tmp_path):
    model_dir = _model_dir(tmp_path)
    ck.save_weights(model_dir / ck.WEIGHTS, {"other": torch.zeros(2)})
    with pytest.raises(InputError, match="do not match their model card") as info:
        ck.load_model_dir(model_dir)
    assert ck.WEIGHTS in str(info.value)
    (model_dir / ck.WEIGHTS).unlink()
    with pytest.raises(InputError, match="not found"):
        ck.load_model_dir(model_dir)


def test_software_versions():
    versions = provenance.software_versions()
    assert versions["torch"] == torch.__version__ and versions["numpy"] == np.__version__
    assert all(isinstance(v, str) for v in versions.values())


def test_pickle_module_unused_by_load(tmp_path):
    path = tmp_path / ck.WEIGHTS
    ck.save_weights(path, _weights())
    with mock.patch.object(pickle, "loads") as loads, mock.patch.object(torch, "load") as tl:
        ck.load_weights(path)
        ck.save_training_state(tmp_path, _state())
        ck.load_training_state(tmp_path)
    loads.assert_not_called()
    tl.assert_not_called()
