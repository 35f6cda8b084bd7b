"""Apply a trained model to a subject: load it safely, translate slice batches, reassemble.

A model directory (``models/<name>/``) is loaded through ``models/checkpoint.py`` only
(safetensors + JSON, nothing unpickled); its card fixes the architecture, grid, context slices
and intensity scaling. Slices are translated in batches sized to the device (halved on CUDA
out-of-memory); SynDiff's ``n_samples`` stochastic samples give a mean and a voxel-wise
standard deviation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pseudopet_bids.device import flush_denormals
from pseudopet_bids.errors import InputError, ProcessingError
from pseudopet_bids.io.files import sha256_file
from pseudopet_bids.models import checkpoint as ckpt
from pseudopet_bids.models.base import TranslationModel
from pseudopet_bids.models.presets import ModelGrid, hparams_from_card
from pseudopet_bids.models.registry import build_model
from pseudopet_bids.preproc.pipeline import Preprocessed
from pseudopet_bids.progress import ProgressReporter, SubjectStatus
from pseudopet_bids.synthesis.modelspace import (PET_MAX, SCALING, context_slices,
                                                 from_model_grid, subject_on_grid, unscale_pet)

LOGGER = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A model ready for inference, with its card."""

    model: TranslationModel
    card: dict[str, Any]
    directory: Path
    grid: ModelGrid
    context: int

    @property
    def name(self) -> str:
        return str(self.card["model"])

    @property
    def sha256(self) -> str:
        return str(self.card["weights_sha256"])


def load_trained(model_dir: Path, device: torch.device) -> TrainedModel:
    """Load ``models/<name>/`` for inference (EMA weights, inference networks only)."""
    model_dir = Path(model_dir)
    card, tensors = ckpt.load_model_dir(model_dir, "cpu")
    for key in ("pet_max", "mri_percentile"):
        if card.get("scaling", {}).get(key) != SCALING[key]:
            raise InputError(f"the model was trained with another intensity scaling "
                             f"({key} {card.get('scaling', {}).get(key)} != {SCALING[key]})",
                             model_dir / ckpt.CARD, "retrain the model with this version")
    try:
        hp = hparams_from_card(card["hparams"])
        context = int(card["context_slices"])
        model = build_model(card["model"], hp, 2 * context + 1)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"the model card does not describe a usable model ({exc})",
                         model_dir / ckpt.CARD, "retrain the model with this version") from exc
    keep = model.inference_modules()
    for name, child in list(model.named_children()):
        if name not in keep and any(True for _ in child.parameters()):
            setattr(model, name, nn.Identity())  # training-only networks: free their memory
    expected = {k for k in model.state_dict() if k.split(".")[0] in keep}
    # networks kept for another inference setting of the same weights (SynDiff's source)
    spare = set(model.export_modules()) - set(keep)
    tensors = {k: v for k, v in tensors.items() if k.split(".")[0] not in spare}
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise InputError(f"the weights do not fit the {card['model']} {card.get('preset')} "
                         f"architecture ({len(missing)} missing, {len(unexpected)} unexpected "
                         f"tensors, e.g. {sorted(missing or unexpected)[:2]})",
                         model_dir / ckpt.WEIGHTS, "retrain the model or restore its files")
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise InputError(f"the weights do not fit the architecture of the card: {exc}",
                         model_dir / ckpt.WEIGHTS, "retrain the model or restore its files"
                         ) from None
    model.to(device).eval()
    flush_denormals()
    return TrainedModel(model, card, model_dir, hp["grid"], context)


def _default_batch(device: torch.device) -> int:
    return 32 if device.type == "cuda" else 8


def translate_volume(trained: TrainedModel, mri: np.ndarray, mask: np.ndarray,
                     device: torch.device, n_samples: int = 1, seed: int = 0,
                     batch_size: int | None = None, status: SubjectStatus | None = None,
                     key: str = "", bf16: bool | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Translate every brain slice of a model-grid T1w volume.

    Parameters
    ----------
    trained
        From :func:`load_trained`.
    mri, mask
        Scaled T1w (X, Y, Z) in [−1, 1] and the brain mask on the model grid.
    device
        Where to run.
    n_samples
        Stochastic samples to average (SynDiff), drawn in one batch per slice; deterministic
        models use 1.
    seed
        Seeds the sampling noise (same seed, same output on CPU).
    batch_size
        Slices per forward pass (default: 8 on CPU, 32 on CUDA; halved on out-of-memory).
    status, key
        Progress record (:class:`pseudopet_bids.progress.SubjectStatus`) and log name: slices
        done are shown as a bar on a terminal, as log lines otherwise, and in ``status.json``.
    bf16
        Run the networks under bf16 autocast (SynDiff's schedule stays fp32); None: on CUDA
        only (the CPU runs fp32, unchanged). ``benchmarks/gpu.py`` measures the drift.

    Returns
    -------
    mean, std
        Model-scale PET (X, Y, Z) (−1 outside the translated slices) and, for ``n_samples`` > 1,
        the voxel-wise standard deviation of the samples (model scale), else None.
    """
    model = trained.model
    n_samples = n_samples if model.stochastic else 1
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    batch = batch_size or _default_batch(device)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    use_bf16 = device.type == "cuda" if bf16 is None else bf16 and device.type == "cuda"
    total = np.zeros(mri.shape, np.float64)
    total2 = np.zeros(mri.shape, np.float64)
    bar = ProgressReporter(n_samples * len(zs), f"{key}: synthesis".lstrip(": "), unit="slices",
                           status=status, logger=LOGGER)
    # the samples of a slice are folded into the batch (one forward pass draws all of them):
    # a batch holds max(1, batch // n_samples) slices x n_samples
    start = 0
    while start < len(zs):
        chunk = zs[start:start + max(1, batch // n_samples)]
        x = torch.from_numpy(np.stack([context_slices(mri, int(z), trained.context)
                                       for z in chunk])).to(device)
        noise_state = gen.get_state()
        y: torch.Tensor | None = None
        try:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16,
                                                        enabled=use_bf16):
                y = model.translate(x.repeat_interleave(n_samples, dim=0), gen).float()
        except torch.cuda.OutOfMemoryError:
            pass  # handled below, once the exception and the frames it holds are freed
        if y is None:
            # the failed attempt's tensors are released before the cache is emptied, and its
            # noise draws are undone: the retry continues the same noise sequence
            del x
            gen.set_state(noise_state)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch == 1:
                raise ProcessingError("CUDA ran out of memory with one slice per batch",
                                      None, "free the GPU or use --device cpu") from None
            batch = max(1, batch // 2)
            LOGGER.warning("CUDA out of memory: synthesis batch reduced to %d slices", batch)
            continue
        draws = y[:, trained.context].double().cpu().numpy().reshape(
            len(chunk), n_samples, *y.shape[2:])
        total[:, :, chunk] += np.moveaxis(draws.sum(axis=1), 0, 2)
        total2[:, :, chunk] += np.moveaxis((draws ** 2).sum(axis=1), 0, 2)
        start += len(chunk)
        bar.update(n_samples * len(chunk))
    bar.close()
    mean = np.full(mri.shape, -1.0, np.float32)
    mean[:, :, zs] = (total[:, :, zs] / n_samples).astype(np.float32)
    if n_samples == 1:
        return mean, None
    var = np.maximum(total2 / n_samples - (total / n_samples) ** 2, 0.0)
    std = np.zeros(mri.shape, np.float32)
    std[:, :, zs] = np.sqrt(var[:, :, zs] * n_samples / (n_samples - 1)).astype(np.float32)
    return mean, std


def synthesize_subject(trained: TrainedModel, pre: Preprocessed, gm: np.ndarray,
                       device: torch.device, n_samples: int = 1, seed: int = 0,
                       status: SubjectStatus | None = None, key: str = ""
                       ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Pseudo-normal PET of a preprocessed subject on its T1w grid.

    The T1w goes to the model grid with the subject's template registration, is translated,
    and the prediction comes back the same way, in GM-median-normalised PET units; it is then
    rescaled so that its median over ``gm`` is 1, like the real PET it is compared with.

    Parameters
    ----------
    trained
        From :func:`load_trained`.
    pre
        A :class:`~pseudopet_bids.preproc.pipeline.Preprocessed` subject.
    gm
        The detection grey matter (bool, T1w grid).
    device, n_samples, seed, status, key
        See :func:`translate_volume`.

    Returns
    -------
    pseudo, std, info
        Pseudo-normal PET and (``n_samples`` > 1 with a stochastic model) its voxel-wise
        standard deviation, both in the same normalised units, masked by the brain mask; and a
        dict for the sidecars.
    """
    reg, grid = pre.registration, trained.grid
    vols = subject_on_grid(reg, pre.t1.get_fdata(dtype=np.float32), pre.mask, pre.affine, grid)
    mean, std = translate_volume(trained, vols["mri"], vols["mask"], device, n_samples, seed,
                                 status=status, key=key)
    pseudo = from_model_grid(reg, unscale_pet(mean), grid) * pre.mask
    factor = float(np.median(pseudo[gm])) if gm.any() else 0.0
    if not factor > 0:
        raise ProcessingError("the model predicted no uptake in the subject's grey matter",
                              trained.directory, "check the model (its validation metrics in "
                              "model.json) and the T1w-to-template registration")
    pseudo = (pseudo / factor).astype(np.float32)
    sd = None
    if std is not None:
        sd = (from_model_grid(reg, std * (PET_MAX / 2.0), grid) * pre.mask / factor
              ).astype(np.float32)
    n_used = n_samples if trained.model.stochastic else 1
    # what this subject's prediction adds to the model card; the card itself (grid, training,
    # validation) is referenced by path and sha256, not copied into every sidecar
    card = trained.directory / ckpt.CARD
    info = {"Name": trained.directory.name, "Type": trained.name,
            "Preset": trained.card.get("preset"), "NSamples": n_used,
            "ContextSlices": trained.context, "GMMedianRescale": round(factor, 6),
            "ModelCard": str(card.resolve()), "ModelCardSHA256": sha256_file(card)}
    return pseudo, sd, info
