"""Group-level training: healthy controls → preprocessed slices → trainer → ``models/<name>/``.

Only participants whose ``participants.tsv`` group is ``control`` are used. Each control is
preprocessed exactly as at the participant level (and through the same cache in the work
folder, so the participant level later reuses it), brought to the model grid and scaled
(``synthesis/modelspace.py``). A control with a T1w but no usable FDG PET still adds its slices
to the MRI domain. A few controls with both images are held out as a paired validation set
(SSIM/PSNR logged during training); the others feed the two unpaired slice streams.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pseudopet_bids import __version__
from pseudopet_bids.bids.discovery import SubjectInputs, discover, load_filters, preflight_table
from pseudopet_bids.bids.inputs import input_files, load_inputs
from pseudopet_bids.bids.participants import read_participants
from pseudopet_bids.config import RunConfig
from pseudopet_bids.detect.search import detection_mask
from pseudopet_bids.device import set_threads
from pseudopet_bids.errors import InputError, PseudopetError, UsageError, naming_inputs
from pseudopet_bids.evaluate.translation import volume_metrics
from pseudopet_bids.io.files import atomic_write_bytes, npz_bytes
from pseudopet_bids.io.temporaries import clean_folders, private_tempdir
from pseudopet_bids.models import checkpoint as ckpt
from pseudopet_bids.models.base import TranslationModel
from pseudopet_bids.models.presets import (AUTO_PRESET, ModelGrid, card_hparams, preset,
                                           resolve_preset)
from pseudopet_bids.models.registry import build_model, model_spec, trainable_models
from pseudopet_bids.preproc.normalize import normalize_pet
from pseudopet_bids.preproc.pipeline import input_hash, preprocess_cached
from pseudopet_bids.synthesis.apply import TrainedModel, translate_volume
from pseudopet_bids.synthesis.modelspace import SCALING, subject_on_grid
from pseudopet_bids.train.data import SliceSet, UnpairedSampler
from pseudopet_bids.train.trainer import Trainer, TrainSettings, _Distributed

LOGGER = logging.getLogger(__name__)


def _grid_key(grid: ModelGrid) -> str:
    return hashlib.sha256(json.dumps(grid.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(eq=False)  # compared by identity: the fields hold arrays
class ControlVolumes:
    """One training control on the model grid, scaled to [−1, 1] (``synthesis/modelspace.py``).

    ``hash`` is the preprocessing cache key of its images; ``pet`` is None for a T1w-only
    control (MRI domain only).
    """

    key: str
    hash: str
    mri: np.ndarray
    mask: np.ndarray
    pet: np.ndarray | None


def prepare_control(unit: SubjectInputs, cfg: RunConfig, grid: ModelGrid) -> ControlVolumes:
    """Preprocess one control (cached) and return its model-grid volumes.

    The arrays are cached in ``WORK/<key>/modelgrid-<grid hash>.npz`` next to the preprocessing
    cache.
    """
    images = load_inputs(unit)
    ex = cfg.execution
    work = Path(ex.work_dir) / unit.key
    digest = input_hash(images.t1, images.pet, ex.seed, cfg.preproc.skullstrip,
                        images.provided.fingerprint)
    cached = work / f"modelgrid-{_grid_key(grid)}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as z:
                if str(z["hash"]) == digest:
                    return ControlVolumes(unit.key, digest, z["mri"], z["mask"],
                                          z["pet"] if "pet" in z.files else None)
        except (OSError, ValueError, KeyError):
            pass
    pre = preprocess_cached(images, work, cfg.preproc, ex.seed, ex.omp_nthreads, unit.key,
                            digest=digest)
    pet_norm = None
    if pre.pet is not None:
        pet_norm, _, _ = normalize_pet(pre.pet, detection_mask(pre, cfg.detection),
                                       method=cfg.synthesis.normalization)
    vols = subject_on_grid(pre.registration, pre.t1.get_fdata(dtype=np.float32), pre.mask,
                           pre.affine, grid, pet_norm)
    atomic_write_bytes(cached, npz_bytes({"hash": np.array(digest), **vols}))
    return ControlVolumes(unit.key, digest, vols["mri"], vols["mask"], vols.get("pet"))


def _prepare_job(args: tuple[SubjectInputs, RunConfig, ModelGrid]) -> ControlVolumes | str:
    unit, cfg, grid = args
    set_threads(cfg.execution.omp_nthreads)
    work = Path(cfg.execution.work_dir)
    clean_folders([(work / unit.key, True)], unit.key)  # cache writes of killed runs
    try:  # ANTs' files, and data problems naming their file: see participant.run_participant
        with private_tempdir(work / "tmp"), naming_inputs(input_files(unit)):
            return prepare_control(unit, cfg, grid)
    except PseudopetError as exc:
        return f"{unit.key}: {exc}"


def training_units(cfg: RunConfig) -> list[SubjectInputs]:
    """The controls' (subject, session) units that can feed at least one domain."""
    inp = cfg.input
    bids = Path(inp.bids_dir)
    participants = read_participants(bids)
    controls = sorted(k for k, p in participants.items() if p.group == "control")
    if not controls:
        raise InputError("participants.tsv lists no healthy controls (group = control); only "
                         "controls can be used for training", bids / "participants.tsv",
                         "add a 'group' column with 'control' for the healthy participants")
    if inp.participant_label:
        controls = [c for c in controls if c in inp.participant_label]
        if not controls:
            raise UsageError("none of the selected participants is a control", None,
                             "select controls with --participant-label, or none to use all")
    units = discover(bids, controls, inp.session_label or None,
                     load_filters(Path(inp.bids_filter_file) if inp.bids_filter_file else None),
                     Path(inp.bids_database_dir) if inp.bids_database_dir else None,
                     inp.allow_any_tracer, {k: Path(v) for k, v in inp.derivatives.items()},
                     report_skipped=False)  # T1w-only controls are used, not skipped
    LOGGER.info("training pre-flight (controls only):\n%s", preflight_table(units))
    usable = []
    for unit in units:
        if unit.runnable:
            usable.append(unit)
        elif unit.t1w is not None and (unit.skip_reason == "no PET image" or
                                       unit.skip_reason.startswith("PET tracer is not FDG")):
            unit.pet = None  # T1w-only control: MRI domain only
            unit.skip_reason = None
            usable.append(unit)
            LOGGER.info("%s: T1w only, used for the MRI domain", unit.key)
        elif unit.t1w is None and unit.pet is not None:
            LOGGER.warning("%s: PET without a T1w cannot be brought to the template grid; "
                           "not used for training", unit.key)
    if not usable:
        raise InputError("no control has a usable T1w", bids,
                         "each training control needs at least a T1w")
    return usable


def split_validation(volumes: list[ControlVolumes], n_val: int | None, seed: int
                     ) -> tuple[list[ControlVolumes], list[ControlVolumes]]:
    """(training, validation): ``n_val`` paired controls held out, chosen by the seed.

    ``n_val`` None picks 2 when at least 6 controls have both images, 1 when at least 3, else 0.
    """
    paired = [v for v in volumes if v.pet is not None]
    if n_val is None:
        n_val = 2 if len(paired) >= 6 else 1 if len(paired) >= 3 else 0
    if n_val > max(0, len(paired) - 1):
        raise UsageError(f"--val-controls {n_val}: only {len(paired)} control(s) have both "
                         "T1w and PET, and at least one must remain for training", None,
                         "lower --val-controls")
    order = np.random.default_rng(seed).permutation(len(paired))
    val_keys = {paired[i].key for i in sorted(order[:n_val])}
    return ([v for v in volumes if v.key not in val_keys],
            [v for v in volumes if v.key in val_keys])


#: Fewest controls with both images a model is trained on (after the validation hold-out),
#: except at the ``tiny`` preset (tests, smoke runs): fewer brains than this teach a model one
#: anatomy, not the normal population.
MIN_TRAINING_CONTROLS = 3
#: Controls with both images that the documented comparisons used (8 to train, 2 to validate,
#: docs/model_comparison.md); fewer are allowed, with a warning.
RECOMMENDED_CONTROLS = 10


def check_training_controls(n_train: int, n_val: int, preset_name: str, bids: Path) -> None:
    """Refuse a training on fewer than :data:`MIN_TRAINING_CONTROLS` paired controls (not at
    the ``tiny`` preset); warn below :data:`RECOMMENDED_CONTROLS` or without validation.

    Raises
    ------
    UsageError
        Too few controls.
    """
    if preset_name == "tiny":
        return
    if n_train < MIN_TRAINING_CONTROLS:
        raise UsageError(f"{n_train} control(s) with T1w and FDG PET left for training "
                         f"({n_val} held out for validation); the {preset_name} preset needs "
                         f"at least {MIN_TRAINING_CONTROLS}, and {RECOMMENDED_CONTROLS} or more "
                         "are recommended", bids,
                         "add healthy controls (group = control in participants.tsv), lower "
                         "--val-controls, or use --preset tiny for a smoke test")
    if n_train + n_val < RECOMMENDED_CONTROLS:
        LOGGER.warning("%d controls with T1w and FDG PET (%d for training, %d for validation): "
                       "fewer than the %d recommended; the model may learn the anatomy of a few "
                       "brains rather than the normal pattern", n_train + n_val, n_train, n_val,
                       RECOMMENDED_CONTROLS)
    if n_val == 0:
        LOGGER.warning("no control held out for validation: the model card will have no "
                       "validation metrics")


def paired_metrics(real: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """SSIM (whole grid, 3D), PSNR and MAE (brain) of model-scale PET mapped to [0, 1]."""
    m = volume_metrics((real + 1) / 2, (pred + 1) / 2, mask)
    return {"ssim": m["ssim_image"], "psnr": m["psnr_brain"], "mae": m["mae_brain"]}


def make_validator(val: list[ControlVolumes], context: int, seed: int, n_samples: int = 1
                   ) -> Callable[[TranslationModel], dict[str, float]] | None:
    """A validation callback for the trainer (mean metrics over the held-out controls).

    A stochastic model is validated on the mean of ``n_samples`` samples, as the participant
    level uses it (``--n-samples``)."""
    if not val:
        return None

    def validate(model: TranslationModel) -> dict[str, float]:
        device = next(model.parameters()).device
        trained = TrainedModel(model, {}, Path("."), None, context)  # type: ignore[arg-type]
        rows = []
        for v in val:
            assert v.pet is not None  # validation controls are paired
            pred, _ = translate_volume(trained, v.mri, v.mask, device, n_samples, seed)
            rows.append(paired_metrics(v.pet, pred, v.mask))
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    return validate


def run_training(cfg: RunConfig) -> dict[str, Any]:
    """``pseudopet BIDS OUT group --train --model NAME``; returns the card."""
    tr, ex, kind = cfg.training, cfg.execution, cfg.synthesis.model
    if kind not in trainable_models():
        choices = " or ".join(trainable_models())
        raise UsageError(f"group --train needs --model {choices} (got {kind!r})", None,
                         f"add --model {trainable_models()[0]}")
    dist = _Distributed(ex.device)
    preset_name = resolve_preset(tr.preset, dist.device.type)
    hp = preset(kind, preset_name)
    grid: ModelGrid = hp["grid"]
    steps = tr.train_steps or hp["steps"]
    batch = tr.batch_size or hp["batch_size"]
    name = tr.model_name or kind
    model_dir = Path(cfg.input.output_dir) / "models" / name
    if tr.preset == AUTO_PRESET:
        LOGGER.info("--preset auto: %s on %s", preset_name, dist.device)
    if preset_name == "paper" and dist.device.type != "cuda":
        LOGGER.warning("the paper preset on %s: its networks take seconds per step on a CPU "
                       "(8 s for CycleGAN, 20 s for SynDiff on 2 cores: docs/models_benchmark.md"
                       "), so %d steps take weeks; the first progress line gives the estimate "
                       "for this machine. Train on a GPU, or use --preset small", dist.device,
                       steps)
    if dist.main:  # what killed trainings left: checkpoint and log temporaries, ANTs folders
        clean_folders(((model_dir, True), (Path(ex.work_dir) / "tmp", False)), name)
    units = training_units(cfg)
    t0 = time.monotonic()
    jobs = [(u, cfg, grid) for u in units]

    def prepare() -> list[ControlVolumes | str]:
        if ex.nprocs > 1 and len(jobs) > 1 and dist.world_size == 1:
            with ProcessPoolExecutor(max_workers=ex.nprocs) as pool:
                return list(pool.map(_prepare_job, jobs))
        return [_prepare_job(j) for j in jobs]

    # rank 0 fills the preprocessing cache; the other ranks then read it
    results = dist.main_first("training data", prepare)
    for failure in (r for r in results if isinstance(r, str)):
        LOGGER.error("not used for training: %s", failure)
    volumes = [r for r in results if isinstance(r, ControlVolumes)]
    LOGGER.info("training data prepared in %.0f s", time.monotonic() - t0)
    train, val = split_validation(volumes, tr.val_controls, ex.seed)
    k = tr.context_slices
    paired = [v for v in train if v.pet is not None]
    sets = {"mri": SliceSet([v.mri for v in train], [v.mask for v in train], k),
            "pet": SliceSet([v.pet for v in paired if v.pet is not None],
                            [v.mask for v in paired], k)}
    if len(sets["pet"]) == 0:
        raise InputError("no training control has a usable FDG PET", Path(cfg.input.bids_dir),
                         "training needs controls with PET (and --val-controls leaves some)")
    check_training_controls(len(paired), len(val), preset_name, Path(cfg.input.bids_dir))
    data_hash = hashlib.sha256("|".join(sorted(v.hash for v in volumes)).encode()
                               ).hexdigest()[:16]
    config = {"model": kind, "preset": preset_name, "context_slices": k, "seed": ex.seed,
              "steps": steps, "batch_size": batch, "data_hash": data_hash,
              "val_controls": sorted(v.key for v in val), "version": __version__}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    if (model_dir / ckpt.CARD).exists() and not ex.force:
        card = ckpt.read_card(model_dir)
        if card.get("config_hash") == config_hash and card.get("steps_done") == steps:
            LOGGER.info("model %s is already trained with these settings (use --force to "
                        "retrain)", model_dir)
            return card
        if not tr.resume:
            ckpt.check_compatible(card, {"config_hash": config_hash}, model_dir)
    if (model_dir / ckpt.STATE_DIR).exists() and not (tr.resume or ex.force):
        raise UsageError("an unfinished training exists in this model folder", model_dir,
                         "continue it with --resume, or start over with --force")
    if ex.force and not tr.resume and dist.main:
        shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    LOGGER.info("training %s (%s preset) on %d MRI and %d PET slices from %d controls "
                "(%d held out for validation); %d steps of %d slices per domain",
                kind, preset_name, len(sets["mri"]), len(sets["pet"]), len(train), len(val),
                steps, batch)
    torch.set_num_threads(max(1, ex.omp_nthreads))  # --omp-nthreads: threads of the trainer
    torch.manual_seed(ex.seed)
    model = build_model(kind, hp, 2 * k + 1)
    card = {"model": kind, "preset": preset_name, "name": name,
            "hparams": card_hparams({key: v for key, v in hp.items()
                                     if key not in ("steps", "batch_size")}),
            "context_slices": k, "scaling": SCALING,
            "config_hash": config_hash, "config": config, "data_hash": data_hash,
            "training_subjects": {
                "mri": [v.key for v in train],
                "pet": [v.key for v in paired],
                "validation": [v.key for v in val]},
            "n_slices": {"mri": len(sets["mri"]), "pet": len(sets["pet"])},
            "template": "MNI152NLin2009aSym", "created_by": f"pseudopet {__version__}",
            "references": list(model_spec(kind).references)}
    settings = TrainSettings.from_config(cfg, steps, batch)
    sampler = UnpairedSampler(sets, batch, ex.seed, dist.rank, dist.world_size)
    trainer = Trainer(model, sampler, settings, model_dir, card,
                      make_validator(val, k, ex.seed, cfg.synthesis.n_samples), dist=dist)
    card = trainer.fit()
    LOGGER.info("model written to %s (%d steps in %.0f s)", model_dir, trainer.step,
                trainer.elapsed)
    return card
