"""Group level: train a model, build a normative model, or aggregate the participants.

The three modes of ``pseudopet BIDS OUT group``: ``--train`` (:mod:`.training`),
``--build-normative`` (:mod:`.normative`) and, by default, the aggregation of every
participant's cluster tables and pseudo-normal PETs into ``OUTPUT_DIR/group/`` with the group
report, the citation text and refreshed subject reports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from pseudopet_bids.bids.derivatives import init_output, labelled_outputs
from pseudopet_bids.bids.participants import Participant, read_participants
from pseudopet_bids.config import RunConfig
from pseudopet_bids.device import resolve_device, set_threads, used_device
from pseudopet_bids.errors import EXIT_OK, InputError
from pseudopet_bids.evaluate.fid import FIDInceptionV3, load_inception
from pseudopet_bids.evaluate.group import aggregate
from pseudopet_bids.evaluate.paired import evaluate_translation
from pseudopet_bids.io.files import write_tsv
from pseudopet_bids.models.registry import model_names, model_spec
from pseudopet_bids.reports.citation import (cards_in_output, write_citation,
                                             z_references_in_output)
from pseudopet_bids.reports.group import write_group_report
from pseudopet_bids.reports.subject import write_subject_report
from pseudopet_bids.synthesis.select import choose_model
from pseudopet_bids.workflows.normative import build_normative
from pseudopet_bids.workflows.training import run_training

LOGGER = logging.getLogger(__name__)


def run_group_level(cfg: RunConfig, prepare_output: Callable[[RunConfig], None]) -> int:
    """Train a model (``--train``), build a normative model (``--build-normative``), or
    aggregate the participants' outputs into OUTPUT_DIR/group/.

    ``prepare_output`` creates the output and work folders (exit 73) once the inputs are known
    to be usable, so a refused run leaves nothing behind.
    """
    out = Path(cfg.input.output_dir)
    bids = Path(cfg.input.bids_dir)
    set_threads(cfg.execution.omp_nthreads)
    # refuse an impossible device before any write, and record the one used (FID; only the
    # trainer knows a torchrun rank's GPU: it records its device in the model card)
    device = used_device(cfg.execution.device, cfg.training.train or bool(cfg.group.fid_weights))
    if not cfg.training.train:
        cfg = cfg.replace(device=device)
    if cfg.training.train:
        prepare_output(cfg)
        init_output(out, bids)
        run_training(cfg)
        return EXIT_OK
    if not out.is_dir():
        raise InputError("the output folder does not exist: nothing to aggregate", out,
                         "run the participant level first")
    if cfg.group.build_normative:
        choose_model(out, cfg.synthesis.model)  # a missing model: exit 66 before any write
        prepare_output(cfg)
        build_normative(cfg, read_participants(bids))
        return EXIT_OK
    fid_weights = cfg.group.fid_weights
    if fid_weights and not Path(fid_weights).is_file():
        raise InputError("--fid-weights: file not found", Path(fid_weights),
                         "give the InceptionV3 weights file (pytorch-fid's "
                         "pt_inception-2015-12-05-6726825d.pth or a .safetensors copy), or leave "
                         "--fid-weights out to skip FID")
    fid_model = None
    if fid_weights:  # load before writing anything: a bad file is refused up front
        fid_model = load_inception(Path(fid_weights))
    prepare_output(cfg)
    participants = read_participants(bids)
    summary = aggregate(out, participants, cfg.input.participant_label or None)
    LOGGER.info("group outputs in %s\n%s", out / "group", summary.to_string(index=False))
    write_translation_tables(out, participants, fid_model, cfg.execution.device,
                             unscored_models(out, cfg.group.translation_metrics))
    write_citation(out, cfg, cards_in_output(out), z_references_in_output(out))
    for subject in sorted({p.parent.name[4:] for p in out.glob("sub-*/figures")}):
        write_subject_report(out, subject, participants.get(subject))
    LOGGER.info("group report: %s", write_group_report(out))
    return EXIT_OK


def unscored_models(out: Path, which: str) -> frozenset[str]:
    """Model labels in the output folder that ``--translation-metrics`` leaves out (said in
    the log): the non-learned models unless ``all``."""
    if which == "all":
        return frozenset()
    baselines = {name for name in model_names() if not model_spec(name).trainable}
    present = {label for _, label in labelled_outputs(out, "pseudonormal")} & baselines
    if present:
        LOGGER.info("translation metrics: not computed for %s (fitted to each subject's own "
                    "PET, its scores mean little; --translation-metrics all computes them)",
                    ", ".join(sorted(present)))
    return frozenset(present)


def write_translation_tables(out: Path, participants: dict[str, Participant],
                             fid_model: FIDInceptionV3 | None, device: str,
                             skip_models: frozenset[str] = frozenset()) -> None:
    """``group/translation*.tsv`` and ``group/spectra.tsv`` from the held-out controls."""
    if fid_model is not None:
        device = str(resolve_device(device))
    per_control, summary, spectra = evaluate_translation(out, participants, fid_model, device,
                                                         skip_models)
    if per_control.empty and not skip_models:
        LOGGER.info("translation metrics: no held-out control with a real PET in %s", out)
    elif fid_model is None:
        LOGGER.info("translation metrics: FID left out (it needs InceptionV3 weights: "
                    "--fid-weights FILE, see docs/evaluation.md)")
    for name, table in (("translation", per_control), ("translation_summary", summary),
                        ("spectra", spectra)):
        write_tsv(out / "group" / f"{name}.tsv", table)
    if not summary.empty:
        cols = ["model", "n_controls", "ssim_brain_mean", "psnr_brain_mean", "rmse_brain_mean",
                "mae_brain_mean", "fid", "spectrum_distance"]
        LOGGER.info("translation quality on held-out controls ([0, 1] scale):\n%s",
                    summary[cols].to_string(index=False, float_format="%.4g"))
