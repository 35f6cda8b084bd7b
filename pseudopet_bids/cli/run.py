"""Entry point: validate the command line, dispatch the analysis level, map errors to exit codes."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pseudopet_bids import __version__
from pseudopet_bids.cli.parser import build_parser
from pseudopet_bids.config import RunConfig
from pseudopet_bids.errors import (EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTICIPANT_FAILED,
                                   InputError, OutputError, PseudopetError, UsageError,
                                   ValidationError)

LOGGER = logging.getLogger("pseudopet")
#: Peak memory of one participant with the tissue model, rounded up (docs/performance.md).
GB_PER_PARTICIPANT = 3.0


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def setup_logging(verbosity: int, logfile: Path | None = None) -> None:
    """Console logging (INFO, or DEBUG with -vv) plus a full DEBUG log file."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # only ours: leave e.g. pytest's capture in place
        if getattr(handler, "_pseudopet", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S"))
    if verbosity < 1:  # keep third-party chatter out of the default console
        console.addFilter(lambda r: r.name.startswith("pseudopet") or r.levelno >= logging.WARNING)
    console._pseudopet = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if logfile is not None:
        fileh = logging.FileHandler(logfile)
        fileh.setLevel(logging.DEBUG)
        fileh.setFormatter(logging.Formatter("%(asctime)s %(name)s [%(levelname)s] %(message)s"))
        fileh._pseudopet = True  # type: ignore[attr-defined]
        root.addHandler(fileh)


def validate_paths(cfg: RunConfig) -> None:
    """Refuse outputs inside the input and unusable folders (exit 64 / 73)."""
    bids, out = Path(cfg.bids_dir), Path(cfg.output_dir)
    if _inside(out, bids):
        raise UsageError("the output folder is the input dataset or inside it", out,
                         "choose an output folder outside the BIDS dataset, e.g. "
                         f"{bids.parent / (bids.name + '_pseudopet')}")
    if cfg.work_dir and _inside(Path(cfg.work_dir), bids):
        raise UsageError("the work folder is inside the input dataset", Path(cfg.work_dir),
                         "choose a work folder outside the BIDS dataset (-w)")
    for name, root in cfg.derivatives.items():
        for what, folder in (("output", out), ("work", Path(cfg.work_dir or out))):
            if _inside(folder, Path(root)):
                raise UsageError(f"the {what} folder is inside the --derivatives dataset "
                                 f"{name!r}", folder, "choose a folder outside the datasets "
                                 "pseudopet reads (they are never modified)")
    if cfg.work_dir and _inside(Path(cfg.work_dir), out):
        raise UsageError("the work folder is inside the output folder", Path(cfg.work_dir),
                         "choose a work folder outside the output folder (-w)")
    if cfg.bids_database_dir and _inside(Path(cfg.bids_database_dir), bids):
        raise UsageError("the pybids database folder is inside the input dataset",
                         Path(cfg.bids_database_dir), "choose a --bids-database-dir outside "
                         "the BIDS dataset (the input is never modified)")


def prepare_dirs(cfg: RunConfig) -> None:
    """Create the output and work folders and start the run's log file and config (exit 73).

    Called only once the inputs are known to be usable, so a refused run leaves nothing behind;
    when the second folder cannot be made, the folders this call created are removed again.
    """
    created: list[Path] = []
    try:
        for folder in (Path(cfg.output_dir), Path(cfg.work_dir)):
            missing = [d for d in (folder, *folder.parents) if not d.exists()][::-1]
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create the folder ({exc.strerror})", folder,
                                  "choose a writable location") from exc
            created += missing
            if not os.access(folder, os.W_OK):
                raise OutputError("the folder is not writable", folder,
                                  "choose a writable location")
        use_work_tmp(Path(cfg.work_dir))
    except OutputError:
        for folder in reversed(created):  # deepest first; only what this call made
            try:
                if (folder / "tmp").is_dir():  # made by use_work_tmp
                    (folder / "tmp").rmdir()
                folder.rmdir()
            except OSError:
                pass  # not empty: something else uses it now
        raise
    from pseudopet_bids.bids.derivatives import atomic_write_text

    logdir = Path(cfg.output_dir) / "logs"
    # host and pid: jobs of one SLURM array start in the same second on different nodes
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{socket.gethostname()}-{os.getpid()}"
    setup_logging(cfg.verbosity, None)
    logdir.mkdir(parents=True, exist_ok=True)
    setup_logging(cfg.verbosity, logdir / f"pseudopet_{cfg.analysis_level}_{stamp}.log")
    atomic_write_text(logdir / f"config_{cfg.analysis_level}_{stamp}.toml", cfg.to_toml())


def use_work_tmp(work_dir: Path) -> Path:
    """Send temporary files (ANTs, tempfile) to ``WORK_DIR/tmp`` instead of ``/tmp``.

    In a container with a read-only root file system only the output and work folders are
    writable; on clusters ``/tmp`` is often small and node-local. Child processes inherit it.
    """
    import tempfile

    tmp = Path(work_dir) / "tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder ({exc.strerror})", tmp,
                          "choose a writable work folder (-w)") from exc
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    # matplotlib (report figures) needs a writable config/cache folder; under a read-only $HOME
    # (containers, Apptainer) it would warn and rebuild its font cache in a fresh temp folder
    mpl = Path(os.environ.get("MPLCONFIGDIR") or Path.home() / ".config" / "matplotlib")
    probe = mpl if mpl.exists() else mpl.parent
    if not os.access(probe, os.W_OK):
        os.environ["MPLCONFIGDIR"] = str(tmp / "matplotlib")
    return tmp


def validate_bids(bids_dir: Path, run_validator: bool = True) -> None:
    """Check that the input is a BIDS dataset and run bids-validator-deno when asked.

    Without a readable ``dataset_description.json`` (missing, not JSON, not an object) the
    input is refused: with exit 16 when validating, 66 (inputs missing) with
    ``--skip-bids-validation``. A derivatives dataset (``DatasetType: derivative``) given as the
    input is a usage error (64): its files would be taken for raw images. Validator errors, and
    a validator that crashes or gives no report, give exit 16.
    """
    import json
    import subprocess

    error = ValidationError if run_validator else InputError
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise error("dataset_description.json is missing: this is not a BIDS dataset",
                    bids_dir, "add dataset_description.json (Name, BIDSVersion) "
                    "or point to the dataset root")
    try:
        content = json.loads(description.read_text(encoding="utf-8-sig"))  # BOM tolerated
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"dataset_description.json is not valid JSON ({exc})", description,
                    'fix it: a UTF-8 JSON object such as {"Name": "My study", '
                    '"BIDSVersion": "1.10.0"}') from exc
    if not isinstance(content, dict):
        raise error("dataset_description.json is not a JSON object", description,
                    'write it as {"Name": "My study", "BIDSVersion": "1.10.0"}')
    if str(content.get("DatasetType", "raw")).lower() == "derivative":
        raise UsageError("the input is a derivatives dataset (DatasetType \"derivative\"), "
                         "not raw BIDS", bids_dir, "give the raw BIDS dataset as BIDS_DIR; "
                         "reuse preprocessed data with -d NAME=PATH")
    if not run_validator:
        return
    from pseudopet_bids.bids.validator import validation_errors

    t0 = time.monotonic()
    try:
        errors = validation_errors(bids_dir)
    except FileNotFoundError:
        LOGGER.warning("bids-validator-deno not found: input not validated "
                       "(pip install bids-validator-deno, or --skip-bids-validation)")
        return
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, TypeError) as exc:
        # no usable report (crash, timeout, unexpected JSON): not a verdict on the data
        raise ValidationError(f"bids-validator-deno did not produce a report "
                              f"({type(exc).__name__}: {str(exc)[:300]})", bids_dir,
                              "run bids-validator-deno on the dataset yourself, or rerun with "
                              "--skip-bids-validation") from exc
    if errors:
        LOGGER.error("bids-validator-deno reported %d error(s) (fix them, or rerun with "
                     "--skip-bids-validation):\n%s", len(errors),
                     "\n".join(f"  {e.get('code')}: {e.get('location', '')} "
                               f"{e.get('subCode') or ''}" for e in errors[:30]))
        raise ValidationError("the input dataset failed BIDS validation", bids_dir,
                              "fix the reported errors, or rerun with --skip-bids-validation")
    LOGGER.info("BIDS validation passed (%.1f s)", time.monotonic() - t0)


def make_config(args) -> RunConfig:
    """RunConfig from parsed arguments (defaults filled in)."""
    out = Path(args.output_dir)
    work = Path(args.work_dir) if args.work_dir else out.parent / f"{out.name}_work"
    return RunConfig(
        bids_dir=str(args.bids_dir), output_dir=str(out), analysis_level=args.analysis_level,
        work_dir=str(work), participant_label=list(args.participant_label),
        session_label=list(args.session_label),
        bids_filter_file=str(args.bids_filter_file or ""),
        bids_database_dir=str(args.bids_database_dir or ""),
        derivatives={k: str(v) for k, v in _derivatives(args.derivatives).items()},
        skip_bids_validation=args.skip_bids_validation, nprocs=args.nprocs,
        omp_nthreads=args.omp_nthreads, mem_gb=float(args.mem_gb or 0.0), device=args.device,
        model=args.model, seed=args.seed, force=args.force, verbosity=args.verbosity,
        z_threshold=args.z_threshold, cluster_min_volume=args.cluster_min_volume,
        gm_threshold=args.gm_threshold, connectivity=args.connectivity,
        search_region=args.search_region,
        skullstrip=args.skullstrip, pet_fwhm=args.pet_fwhm,
        allow_any_tracer=args.allow_any_tracer, n_samples=args.n_samples, train=args.train,
        preset=args.preset, model_name=args.model_name or "", train_steps=args.train_steps,
        batch_size=args.batch_size, accumulate=args.accumulate,
        context_slices=args.context_slices, val_controls=args.val_controls,
        val_every=args.val_every, checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes, resume=args.resume,
        z_reference=args.z_reference, build_normative=args.build_normative,
        fid_weights=str(args.fid_weights.resolve()) if args.fid_weights else "",
        template_source=_template_source())


def _template_source() -> str:
    """Where the template comes from, logged once (TemplateFlow home, or the packaged copy)."""
    from pseudopet_bids import resources

    source = resources.template_source()
    if source.startswith("TemplateFlow"):
        LOGGER.info("template %s from %s", resources.TEMPLATE_NAME, source)
    else:
        LOGGER.info("template %s: %s copy (TemplateFlow: %s; nothing is downloaded)",
                    resources.TEMPLATE_NAME, source, resources.templateflow_files()[1])
    return source


def _derivatives(specs: list[str]) -> dict[str, Path]:
    """``-d`` values → {name: root}; a bad dataset is reported as an input error (exit 66)."""
    if not specs:
        return {}
    from pseudopet_bids.bids.reuse import parse_derivative_specs

    return parse_derivative_specs(specs)


def _run_unit(unit, cfg: RunConfig, participants: dict) -> tuple[str, str | None]:
    from pseudopet_bids.participant import run_participant

    try:
        run_participant(unit, cfg, participants.get(unit.subject))
        return unit.key, None
    except PseudopetError as exc:
        LOGGER.error("%s failed: %s", unit.key, exc)
        return unit.key, str(exc)
    except Exception as exc:  # keep other participants running; full traceback in the log file
        LOGGER.debug("%s traceback", unit.key, exc_info=True)
        LOGGER.error("%s failed with an unexpected error: %s: %s (see the log file in "
                     "OUTPUT_DIR/logs; please report it)", unit.key, type(exc).__name__, exc)
        return unit.key, f"{type(exc).__name__}: {exc}"


def run_participant_level(cfg: RunConfig) -> int:
    """Discover, print the pre-flight table, process each runnable unit."""
    from pseudopet_bids.bids.derivatives import init_output
    from pseudopet_bids.bids.discovery import discover, load_filters, preflight_table
    from pseudopet_bids.bids.participants import read_participants

    bids = Path(cfg.bids_dir)
    participants = read_participants(bids)
    units = discover(bids, cfg.participant_label or None, cfg.session_label or None,
                     load_filters(Path(cfg.bids_filter_file) if cfg.bids_filter_file else None),
                     Path(cfg.bids_database_dir) if cfg.bids_database_dir else None,
                     cfg.allow_any_tracer, {k: Path(v) for k, v in cfg.derivatives.items()})
    LOGGER.info("pre-flight:\n%s", preflight_table(units))
    runnable = [u for u in units if u.runnable]
    if not runnable:
        raise InputError("no participant has the inputs it needs (see the pre-flight table)",
                         bids, "each participant needs a T1w and an FDG PET image")
    from pseudopet_bids.participant import (labels_for, model_sha256, resolve_model,
                                            resolve_normative)

    model_dir = resolve_model(cfg)  # fail before any work when the model is missing or broken
    resolve_normative(cfg, labels_for(cfg, model_dir)[0], model_sha256(model_dir))
    if model_dir is not None:
        import torch

        from pseudopet_bids.device import resolve_device
        from pseudopet_bids.synthesis.apply import load_trained

        resolve_device(cfg.device)  # --device cuda without a GPU: usage error before any work
        # the whole model folder is checked (card, weights sha256, architecture) before any
        # output exists: a broken model is one clear error (66), not one failure per subject
        card = load_trained(model_dir, torch.device("cpu")).card
        LOGGER.info("model: %s (%s, %s preset, %s steps)", model_dir, card["model"],
                    card["preset"], card.get("steps_done"))
    prepare_dirs(cfg)
    init_output(Path(cfg.output_dir), bids, cfg.derivatives)
    t0 = time.monotonic()
    nprocs = cfg.nprocs
    if cfg.mem_gb and nprocs > 1:
        fit = max(1, int(cfg.mem_gb // GB_PER_PARTICIPANT))
        if fit < nprocs:
            LOGGER.warning("--mem %.1f GB fits %d participant(s) at a time (about %.0f GB each): "
                           "using --nprocs %d", cfg.mem_gb, fit, GB_PER_PARTICIPANT, fit)
            nprocs = fit
    if nprocs > 1 and len(runnable) > 1:
        with ProcessPoolExecutor(max_workers=nprocs) as pool:
            results = list(pool.map(_run_unit, runnable, [cfg] * len(runnable),
                                    [participants] * len(runnable)))
    else:
        results = [_run_unit(u, cfg, participants) for u in runnable]
    failed = [(key, err) for key, err in results if err]
    LOGGER.info("participant level done in %.0f s: %d ok, %d failed, %d skipped",
                time.monotonic() - t0, len(results) - len(failed), len(failed),
                len(units) - len(runnable))
    for key, err in failed:
        LOGGER.error("  %s: %s", key, err)
    return EXIT_PARTICIPANT_FAILED if failed else EXIT_OK


def run_group_level(cfg: RunConfig) -> int:
    """Train a model (``--train``), or aggregate cluster tables into OUTPUT_DIR/group/."""
    from pseudopet_bids.bids.participants import read_participants
    from pseudopet_bids.evaluate.group import aggregate

    out = Path(cfg.output_dir)
    if cfg.train:
        from pseudopet_bids.bids.derivatives import init_output
        from pseudopet_bids.device import resolve_device
        from pseudopet_bids.train.workflow import run_training

        resolve_device(cfg.device)  # refuse an impossible device before writing anything
        prepare_dirs(cfg)
        init_output(out, Path(cfg.bids_dir))
        run_training(cfg)
        return EXIT_OK
    if not out.is_dir():
        raise InputError("the output folder does not exist: nothing to aggregate", out,
                         "run the participant level first")
    if cfg.build_normative:
        from pseudopet_bids.participant import resolve_model
        from pseudopet_bids.train.normative import build_normative

        resolve_model(cfg)  # a missing model is a usage error before anything is written
        prepare_dirs(cfg)
        build_normative(cfg, read_participants(Path(cfg.bids_dir)))
        return EXIT_OK
    if cfg.fid_weights and not Path(cfg.fid_weights).is_file():
        raise InputError("--fid-weights: file not found", Path(cfg.fid_weights),
                         "give the InceptionV3 weights file (pytorch-fid's "
                         "pt_inception-2015-12-05-6726825d.pth or a .safetensors copy), or leave "
                         "--fid-weights out to skip FID")
    fid_model = None
    if cfg.fid_weights:  # load before writing anything: a bad file is refused up front
        from pseudopet_bids.evaluate.fid import load_inception

        fid_model = load_inception(Path(cfg.fid_weights))
    prepare_dirs(cfg)
    participants = read_participants(Path(cfg.bids_dir))
    summary = aggregate(out, participants, cfg.participant_label or None)
    LOGGER.info("group outputs in %s\n%s", out / "group", summary.to_string(index=False))
    write_translation_tables(out, participants, fid_model, cfg.device)
    from pseudopet_bids.reports.citation import (cards_in_output, write_citation,
                                                 z_references_in_output)
    from pseudopet_bids.reports.group import write_group_report
    from pseudopet_bids.reports.subject import write_subject_report

    write_citation(out, cfg, cards_in_output(out), z_references_in_output(out))
    for subject in sorted({p.parent.name[4:] for p in out.glob("sub-*/figures")}):
        write_subject_report(out, subject, participants.get(subject))
    LOGGER.info("group report: %s", write_group_report(out))
    return EXIT_OK


def write_translation_tables(out: Path, participants: dict, fid_model, device: str) -> None:
    """``group/translation*.tsv`` and ``group/spectra.tsv`` from the held-out controls."""
    from pseudopet_bids.bids.derivatives import write_tsv
    from pseudopet_bids.evaluate.paired import evaluate_translation

    if fid_model is not None:
        from pseudopet_bids.device import resolve_device

        device = str(resolve_device(device))
    per_control, summary, spectra = evaluate_translation(out, participants, fid_model, device)
    if per_control.empty:
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


def main(argv: list[str] | None = None) -> int:
    """Run ``pseudopet``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.train and args.analysis_level != "group":
        parser.error("--train belongs to the group level: pseudopet BIDS OUT group --train ...")
    if args.train and args.model not in ("cyclegan", "syndiff"):
        parser.error("--train needs --model cyclegan or --model syndiff")
    if args.build_normative and (args.analysis_level != "group" or args.train):
        parser.error("--build-normative belongs to the group level, without --train: "
                     "pseudopet BIDS OUT group --build-normative --model M")
    if args.z_reference != "subject" and args.analysis_level != "participant":
        parser.error("--z-reference belongs to the participant level")
    # ITK fixes its thread count at its first use in a process: set it before any ANTs call.
    # The image leaves these unset, so --omp-nthreads (default min(cores, 8)) is the default;
    # a value set by the user's environment wins (e.g. a scheduler's per-job limit).
    for var in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.omp_nthreads))
    setup_logging(args.verbosity)
    import tempfile

    saved_tmp = (tempfile.tempdir, os.environ.get("TMPDIR"))  # use_work_tmp changes both
    try:
        cfg = make_config(args)
        validate_paths(cfg)
        LOGGER.info("pseudopet %s, %s level, input %s, output %s", __version__,
                    cfg.analysis_level, cfg.bids_dir, cfg.output_dir)
        validate_bids(Path(cfg.bids_dir), run_validator=not cfg.skip_bids_validation)
        if cfg.analysis_level == "participant":
            return run_participant_level(cfg)
        return run_group_level(cfg)
    except PseudopetError as exc:
        LOGGER.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        LOGGER.error("interrupted")
        return EXIT_INTERRUPTED
    finally:  # leave the calling process as it was (main() is also called from Python)
        tempfile.tempdir = saved_tmp[0]
        if saved_tmp[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_tmp[1]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
