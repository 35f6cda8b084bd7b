"""FID InceptionV3: architecture and state-dict names, weight loading (safe), FID statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from pseudopet_bids.errors import EXIT_NO_INPUT, InputError
from pseudopet_bids.evaluate import fid as fid_module
from pseudopet_bids.evaluate.fid import (convert_to_safetensors, fid, fid_from_features,
                                         inception_features, load_inception)
from pseudopet_bids.evaluate.inception import FIDInceptionV3

#: BasicConv2d blocks: stem 5, Mixed_5b-d 3 x 7, Mixed_6a 4, Mixed_6b-e 4 x 10, Mixed_7a 6,
#: Mixed_7b-c 2 x 9 = 94; each holds conv.weight and bn.{weight, bias, running_mean,
#: running_var, num_batches_tracked}; plus fc.weight and fc.bias.
N_STATE_TENSORS = 94 * 6 + 2

EXPECTED_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_1a_3x3.bn.num_batches_tracked": (),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch_pool.conv.weight": (64, 288, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6a.branch3x3dbl_3.conv.weight": (96, 96, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_2.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3_2a.conv.weight": (384, 384, 1, 3),
    "Mixed_7b.branch1x1.conv.weight": (320, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.bias": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _randomised_state(seed: int) -> dict[str, torch.Tensor]:
    """A seeded state dict whose activations stay of order one (He-scaled convolutions)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in FIDInceptionV3().state_dict().items():
        if key.endswith("conv.weight"):
            fan_in = value[0].numel()
            new = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.endswith("bn.weight") or key.endswith("running_var"):
            new = 0.5 + torch.rand(value.shape, generator=gen)
        elif key.endswith("bn.bias") or key.endswith("running_mean"):
            new = 0.1 * torch.randn(value.shape, generator=gen)
        else:
            new = value.clone()
        state[key] = new
    return state


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return _randomised_state(0)


@pytest.fixture(scope="module")
def model(state) -> FIDInceptionV3:
    net = FIDInceptionV3()
    net.load_state_dict(state, strict=True)
    return net.eval()


# (a) architecture -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 64, 80), (1, 3, 299, 299)])
def test_output_shape_for_any_input_size(model, shape):
    with torch.inference_mode():
        out = model(torch.rand(shape, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (shape[0], 2048)
    assert torch.isfinite(out).all() and (out >= 0).all() and out.abs().max() > 1e-3


def test_classifier_and_input_checks(model):
    assert (model.fc.in_features, model.fc.out_features) == (2048, 1008)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# (b) state-dict names and shapes ----------------------------------------------------------

def test_state_dict_names_and_shapes_match_pytorch_fid_file():
    sd = FIDInceptionV3().state_dict()
    assert len(sd) == N_STATE_TENSORS
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any("AuxLogits" in k for k in sd)
    # The only non-BasicConv2d tensors are the classifier's.
    assert {k for k in sd if not (".conv." in k or ".bn." in k)} == {"fc.weight", "fc.bias"}


# (c) round trip through both file formats -------------------------------------------------

def test_round_trip_safetensors_and_pth(tmp_path, state, model):
    from safetensors.torch import save_file

    st_path, pth_path = tmp_path / "w.safetensors", tmp_path / "w.pth"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st_path))
    torch.save(model.state_dict(), pth_path)
    converted = tmp_path / "converted.safetensors"
    convert_to_safetensors(pth_path, converted)

    nets = [load_inception(p) for p in (st_path, pth_path, converted)]
    assert all(not n.training for n in nets)
    slices = np.random.default_rng(0).uniform(0, 1, (1, 40, 48))
    feats = [inception_features(n, slices) for n in nets[:2]]
    assert feats[0].dtype == np.float64 and feats[0].shape == (1, 2048)
    np.testing.assert_array_equal(feats[0], feats[1])
    for net in nets[1:]:
        for key, value in state.items():
            torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0)


def test_file_without_num_batches_tracked_loads(tmp_path, state):
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, path)
    net = load_inception(path)
    torch.testing.assert_close(net.state_dict()["fc.weight"], state["fc.weight"])


def test_inception_features_greys_clips_and_batches(model):
    slices = np.random.default_rng(1).uniform(-0.5, 1.5, (3, 30, 36))
    feats = inception_features(model, slices, batch_size=2)
    clipped = torch.from_numpy(np.clip(slices, 0, 1).astype(np.float32))
    with torch.inference_mode():
        direct = model(clipped[:, None].expand(-1, 3, -1, -1)).double().numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="N, H, W"):
        inception_features(model, slices[0])


# (d) a .pth that needs code to unpickle is refused, and nothing runs -----------------------

_RAN: list[str] = []


def _record_execution(tag: str) -> None:
    _RAN.append(tag)


class _Payload:
    """Unpickling this object would call ``_record_execution``."""

    def __reduce__(self):
        return (_record_execution, ("executed",))


def test_pth_with_python_object_is_refused_without_running_it(tmp_path, state):
    path = tmp_path / "evil.pth"
    torch.save({**state, "payload": _Payload()}, path)
    _RAN.clear()
    with pytest.raises(InputError) as err:
        load_inception(path)
    assert _RAN == []
    assert err.value.path == path and str(path) in str(err.value)
    assert err.value.exit_code == EXIT_NO_INPUT
    with pytest.raises(InputError):
        convert_to_safetensors(path, tmp_path / "out.safetensors")
    assert _RAN == [] and not (tmp_path / "out.safetensors").exists()
    # Control: the unrestricted loader would indeed have run the payload.
    torch.load(path, weights_only=False)
    assert _RAN == ["executed"]


def test_pth_with_non_tensor_values_is_refused(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "fc.weight": torch.zeros(2)}, path)
    with pytest.raises(InputError, match="non-tensor"):
        load_inception(path)


# (e) missing files and wrong weights ------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(InputError, match="--fid-weights") as err:
        load_inception(path)
    assert err.value.path == path and str(path) in str(err.value)


def test_mismatched_keys_and_shapes_are_named(tmp_path, state):
    bad = dict(state)
    bad["Mixed_5b.branch_pool.conv.weights"] = bad.pop("Mixed_5b.branch_pool.conv.weight")
    bad.pop("Conv2d_1a_3x3.bn.running_mean")
    path = tmp_path / "renamed.pth"
    torch.save(bad, path)
    with pytest.raises(InputError) as err:
        load_inception(path)
    text = str(err.value)
    assert str(path) in text and "pt_inception-2015-12-05-6726825d.pth" in text
    assert "Conv2d_1a_3x3.bn.running_mean" in text and "branch_pool.conv.weights" in text

    imagenet_head = dict(state, **{"fc.weight": torch.zeros(1000, 2048),
                                   "fc.bias": torch.zeros(1000)})
    path = tmp_path / "imagenet.pth"
    torch.save(imagenet_head, path)
    with pytest.raises(InputError, match=r"fc\.weight \(1000, 2048\)"):
        load_inception(path)


def test_corrupt_and_unsupported_files(tmp_path):
    for name in ("junk.pth", "junk.safetensors", "weights.npz"):
        path = tmp_path / name
        path.write_bytes(b"not a weights file")
        with pytest.raises(InputError) as err:
            load_inception(path)
        assert err.value.path == path


# (f) Fréchet distance of feature sets -----------------------------------------------------

def _reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(linalg.sqrtm(s_a @ s_b))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * covmean))


def test_fid_from_features_properties():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 8))
    b = rng.normal(size=(40, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 0.3
    assert fid_from_features(a, a) == pytest.approx(0, abs=1e-8)
    d_ab = fid_from_features(a, b)
    assert d_ab == pytest.approx(fid_from_features(b, a), rel=1e-8)
    assert d_ab == pytest.approx(_reference_fid(a, b), rel=1e-8)
    shifts = [fid_from_features(a, a + s) for s in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)
    assert fid_from_features(a, b + 1.0) > d_ab


def test_fid_from_features_rejects_bad_input():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(rng.normal(size=(1, 8)), rng.normal(size=(5, 8)))
    with pytest.raises(ValueError):
        fid_from_features(rng.normal(size=(5, 8)), rng.normal(size=(5, 7)))


def test_fid_wires_features_to_frechet_distance(model, monkeypatch):
    seen = {}

    def spy(mu1, sigma1, mu2, sigma2):  # the real one takes ~6 s on 2048-d features
        seen.update(mu1=mu1, sigma1=sigma1, mu2=mu2, sigma2=sigma2)
        return 0.0

    monkeypatch.setattr(fid_module, "frechet_distance", spy)
    slices = np.random.default_rng(4).uniform(0, 1, (2, 24, 24))
    assert fid(slices, slices, model) == 0.0
    assert seen["mu1"].shape == (2048,) and seen["sigma1"].shape == (2048, 2048)
    np.testing.assert_array_equal(seen["mu1"], seen["mu2"])
    np.testing.assert_array_equal(seen["sigma1"], seen["sigma2"])
