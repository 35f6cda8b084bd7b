"""Fréchet Inception Distance (FID) of 2D slices, with InceptionV3 weights given as a file.

The weights are never downloaded: the user passes pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` (or the same tensors converted to safetensors with
:func:`convert_to_safetensors`) through ``--fid-weights``. ``.pth`` files are read with
PyTorch's restricted unpickler (``weights_only=True``), which cannot run code; a file that
needs anything beyond tensors and plain containers is refused.

Slices are grey images in [0, 1]; they are replicated to three channels, resized to 299x299
and mapped to [-1, 1] inside :class:`~pseudopet_bids.evaluate.inception.FIDInceptionV3`,
as pytorch-fid does. The distance itself is
:func:`pseudopet_bids.evaluate.translation.frechet_distance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pseudopet_bids.errors import InputError
from pseudopet_bids.evaluate.inception import FEATURE_DIM, FIDInceptionV3
from pseudopet_bids.evaluate.translation import frechet_distance
from pseudopet_bids.models.checkpoint import save_weights

#: The file the weights are expected to come from.
EXPECTED_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
_FIX = (f"pass pytorch-fid's {EXPECTED_WEIGHTS} (FID InceptionV3, TensorFlow graph "
        "2015-12-05), or the same weights converted to .safetensors")
_SUFFIXES = (".safetensors", ".pth", ".pt")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a flat name -> tensor mapping from a safetensors or (tensor-only) .pth file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--fid-weights file {path} not found", path,
                         f"check the path; {_FIX}")
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise InputError(f"unsupported weights format {suffix!r} (expected one of "
                         f"{', '.join(_SUFFIXES)})", path, _FIX)
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"cannot read safetensors file: {exc}", path, _FIX) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            "refused or unreadable .pth file: it must hold only tensors (it was read with "
            f"torch.load(weights_only=True), which never runs code): {first}", path,
            f"{_FIX}; convert a trusted checkpoint to .safetensors if needed") from exc
    if not isinstance(state, Mapping):
        raise InputError(f"the .pth file holds a {type(state).__name__}, not a state dict",
                         path, _FIX)
    bad = [str(k) for k, v in state.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"the .pth file holds non-tensor entries, e.g. {bad[:3]}", path, _FIX)
    return dict(state)


def _checked_model(state: dict[str, torch.Tensor], path: Path) -> FIDInceptionV3:
    """A :class:`FIDInceptionV3` holding ``state``; InputError when the keys or shapes differ."""
    model = FIDInceptionV3()
    expected = model.state_dict()
    # Files written before batch norm counted its updates lack num_batches_tracked; the
    # counter plays no part in evaluation, so it is not required.
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[:3]}")
        raise InputError("not the FID InceptionV3 weights: " + "; ".join(parts), path, _FIX)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"cannot load the weights: {exc}", path, _FIX) from exc
    return model.eval()


def load_inception(path: Path) -> FIDInceptionV3:
    """Build the FID InceptionV3 from a weights file, in evaluation mode, on the CPU.

    Parameters
    ----------
    path
        ``.safetensors`` or ``.pth``/``.pt`` file holding the state dict of pytorch-fid's
        ``pt_inception-2015-12-05-6726825d.pth``.

    Returns
    -------
    FIDInceptionV3
        The network with the weights loaded strictly, in ``eval()`` mode.

    Raises
    ------
    InputError
        The file is missing or unreadable, holds anything but tensors (``.pth``), or its
        keys or shapes are not those of the FID InceptionV3.
    """
    path = Path(path)
    return _checked_model(_read_tensors(path), path)


def convert_to_safetensors(src: Path, dst: Path) -> None:
    """Convert a tensor-only ``.pth`` FID InceptionV3 state dict to a ``.safetensors`` file.

    The source is read with the restricted loader and checked against
    :class:`FIDInceptionV3` first, so a converted file always loads.

    Parameters
    ----------
    src
        The ``.pth``/``.pt`` (or ``.safetensors``) weights file.
    dst
        The ``.safetensors`` file to write (its folder must exist).

    Raises
    ------
    InputError
        As :func:`load_inception`, for ``src``.
    """
    src = Path(src)
    state = _read_tensors(src)
    _checked_model(dict(state), src)
    save_weights(Path(dst), {k: v.detach().contiguous() for k, v in state.items()})  # atomic


def inception_features(model: FIDInceptionV3, slices: np.ndarray, batch_size: int = 16,
                       device: str | torch.device = "cpu") -> np.ndarray:
    """InceptionV3 pool features of grey 2D slices.

    Parameters
    ----------
    model
        The network from :func:`load_inception`. It is moved to ``device`` and set to
        ``eval()`` mode (in place).
    slices
        (N, H, W) intensities in [0, 1]; values outside are clipped. Replicated to three
        channels.
    batch_size
        Slices per forward pass.
    device
        Where to run the network.

    Returns
    -------
    np.ndarray
        float64 (N, 2048) features.
    """
    slices = np.asarray(slices)
    if slices.ndim != 3:
        raise ValueError(f"inception_features: expected (N, H, W) slices, got {slices.shape}")
    if batch_size < 1:
        raise ValueError("inception_features: batch_size must be at least 1")
    if not np.isfinite(slices).all():
        raise ValueError("inception_features: slices contain NaN or infinite values")
    model = model.to(device).eval()
    out = np.empty((len(slices), FEATURE_DIM), np.float64)
    with torch.inference_mode():
        for start in range(0, len(slices), batch_size):
            chunk = np.clip(slices[start:start + batch_size].astype(np.float32), 0.0, 1.0)
            x = torch.from_numpy(chunk).to(device).unsqueeze(1).expand(-1, 3, -1, -1)
            out[start:start + len(chunk)] = model(x).double().cpu().numpy()
    return out


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets.

    Parameters
    ----------
    real, fake
        (N, D) and (M, D) feature arrays, N, M >= 2.

    Returns
    -------
    float
        ``‖μr − μf‖² + tr(Σr + Σf − 2 (Σr Σf)^½)`` with sample covariances (ddof 1).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"fid_from_features: expected (N, D) and (M, D) features, got "
                         f"{real.shape} and {fake.shape}")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("fid_from_features: need at least 2 samples in each set, got "
                         f"{len(real)} and {len(fake)}")
    return frechet_distance(real.mean(0), np.cov(real, rowvar=False),
                            fake.mean(0), np.cov(fake, rowvar=False))


def fid(real_slices: np.ndarray, fake_slices: np.ndarray, model: FIDInceptionV3,
        batch_size: int = 16, device: str | torch.device = "cpu") -> float:
    """FID between two stacks of grey slices in [0, 1].

    Parameters
    ----------
    real_slices, fake_slices
        (N, H, W) and (M, H', W') slices, N, M >= 2.
    model
        The network from :func:`load_inception`.
    batch_size, device
        As for :func:`inception_features`.

    Returns
    -------
    float
        The Fréchet Inception Distance (0 for identical feature statistics).
    """
    real = inception_features(model, real_slices, batch_size, device)
    fake = inception_features(model, fake_slices, batch_size, device)
    return fid_from_features(real, fake)
