"""Command-line parser (BIDS Apps + NiPreps conventions, DESIGN.md §2) and the run config it
builds.

Built in one function with named argument groups and small validators. Option defaults come
from :mod:`pseudopet_bids.config` and the choices of ``--model`` and ``--z-reference`` from the
registries (:mod:`pseudopet_bids.models.registry`, :mod:`pseudopet_bids.detect.rules`); it
imports no heavy module (no torch, no ANTs, no pybids) so ``pseudopet --help`` and usage errors
are instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pseudopet_bids import __version__
from pseudopet_bids.bids.reuse import parse_derivative_specs
from pseudopet_bids.config import CALIBRATIONS, IMAGE_CONVENTIONS, RunConfig, default
from pseudopet_bids.detect.rules import get_rule, rule_names
from pseudopet_bids.errors import UsageError
from pseudopet_bids.models.presets import AUTO_PRESET, PRESETS
from pseudopet_bids.models.registry import model_names, model_spec, trainable_models

EPILOG = """\
examples:
  pseudopet /data/bids /data/out participant --participant-label 01 02
  pseudopet /data/bids /data/out participant --model tissue --z-threshold 2.0 -v
  pseudopet /data/bids /data/out group
  pseudopet /data/bids /data/out group --train --model syndiff --preset small
  pseudopet /data/bids /data/out participant --model syndiff --n-samples 8
  pseudopet /data/bids /data/out participant -d smriprep=/data/derivatives/smriprep \
      petprep=/data/derivatives/petprep            # reuse their preprocessing
  docker run --gpus all --rm -v /data/bids:/data:ro -v /data/out:/out -v /scratch:/work \
      pseudopet/pseudopet:VERSION /data /out participant -w /work   # docs/containers.md

exit codes: 0 ok, 1 some participants failed, 16 BIDS validation failed,
18 the selection or the filter file matched nothing, 64 usage error (bad option;
--device cuda without a GPU), 66 required inputs missing (no participant with a T1w
and an FDG PET; --model naming no trained model), 73 cannot create output,
130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with the BIDS-Apps usage exit code (64) instead of argparse's 2."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(64, f"{self.prog}: error: {message}\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def int_in(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high) (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value >= high):
            bound = f">= {low}" if high is None else f"in [{low}, {high})"
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound}")
        return value

    return parse


_positive_int = int_in(1)
_seed = int_in(0, 2**32)


def _existing_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return path.resolve()


def _existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    return path.resolve()


def _label(text: str) -> str:
    label = text[4:] if text.startswith(("sub-", "ses-")) else text
    if not label.isalnum():
        raise argparse.ArgumentTypeError(f"label {text!r} must be alphanumeric (BIDS)")
    return label


def _derivative_spec(text: str) -> str:
    name, sep, path = text.partition("=")
    if sep and not (name and name.replace("-", "").replace("_", "").isalnum()):
        raise argparse.ArgumentTypeError(f"{text!r}: NAME in NAME=PATH must be letters, digits, "
                                         "'-' or '_'")
    folder = Path(path if sep else text).expanduser()
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"derivatives folder {str(folder)!r} does not exist")
    return f"{name}={folder.resolve()}" if sep else str(folder.resolve())


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: choose auto, cpu, cuda or cuda:N")


def _model(text: str) -> str:
    if text == "auto" or text in model_names():
        return text
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither {'/'.join(model_names())} nor an existing model folder")


def _choices(names: tuple[str, ...]) -> str:
    return "{" + ",".join(names) + "}"


def build_parser() -> argparse.ArgumentParser:
    """The ``pseudopet`` argument parser."""
    parser = _Parser(
        prog="pseudopet",
        description="Pseudo-normal FDG PET from T1w MRI, and hypometabolic focus detection "
                    "for epilepsy (BIDS App).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bids_dir", type=_existing_dir, help="root of the BIDS dataset")
    parser.add_argument("output_dir", type=lambda t: Path(t).expanduser().resolve(),
                        help="output folder (BIDS-Derivatives); created if needed")
    parser.add_argument("analysis_level", choices=["participant", "group"],
                        help="participant: per-subject synthesis and detection; "
                             "group: aggregate participants' cluster tables, or with --train "
                             "train a model on the healthy controls")
    parser.add_argument("--version", action="version", version=f"pseudopet {__version__}")
    parser.add_argument("-v", "--verbose", dest="verbosity", action="count",
                        default=default("verbosity"),
                        help="more log output (-v info details, -vv debug)")

    g = parser.add_argument_group("selecting the data")
    g.add_argument("--participant-label", "--participant_label", dest="participant_label",
                   nargs="+", type=_label, default=[], metavar="LABEL",
                   help="subjects to process (with or without 'sub-'); default: all")
    g.add_argument("--session-label", dest="session_label", nargs="+", type=_label, default=[],
                   metavar="LABEL", help="sessions to process; default: all")
    g.add_argument("--bids-filter-file", dest="bids_filter_file", type=_existing_file,
                   metavar="FILE", help='JSON pybids queries {"t1w": {...}, "pet": {...}}')
    g.add_argument("--skip-bids-validation", "--skip_bids_validation",
                   dest="skip_bids_validation", action="store_true",
                   help="do not run bids-validator-deno on the input")
    g.add_argument("--bids-database-dir", dest="bids_database_dir",
                   type=lambda t: Path(t).expanduser().resolve(), metavar="DIR",
                   help="pybids database folder to create or reuse")
    g.add_argument("-d", "--derivatives", nargs="+", type=_derivative_spec, default=[],
                   metavar="NAME=PATH",
                   help="reuse fMRIPrep/sMRIPrep/PETPrep outputs instead of computing them: "
                        "desc-preproc_T1w, desc-brain_mask, label-GM/WM/CSF_probseg, the "
                        "MNI152NLin2009aSym transforms, and space-T1w_desc-preproc_pet "
                        "(e.g. -d smriprep=/data/derivatives/smriprep petprep=/data/petprep)")
    g.add_argument("--allow-any-tracer", dest="allow_any_tracer", action="store_true",
                   help="also run PET whose tracer is not FDG (the method assumes FDG)")

    g = parser.add_argument_group("resources")
    g.add_argument("-w", "--work-dir", dest="work_dir",
                   type=lambda t: Path(t).expanduser().resolve(), metavar="DIR",
                   help="intermediate and temporary files (default: OUTPUT_DIR_work, beside "
                        "the output folder)")
    g.add_argument("--nprocs", type=_positive_int, default=default("nprocs"), metavar="N",
                   help="participants processed in parallel (default: %(default)s)")
    g.add_argument("--omp-nthreads", dest="omp_nthreads", type=_positive_int, metavar="N",
                   default=default("omp_nthreads"),
                   help="threads per participant (default: %(default)s); reruns are byte-identical only with "
                        "1 (multi-threaded registration can move a cluster by a few mm3; "
                        "docs/reliability.md)")
    g.add_argument("--mem", dest="mem_gb", type=_positive_float, default=default("mem_gb"),
                   metavar="GB",
                   help="memory available in GB: limits how many participants run at once "
                        "(about 3 GB each; default: no limit)")
    g.add_argument("--device", type=_device, default=default("device"),
                   metavar="{auto,cpu,cuda,cuda:N}",
                   help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    g.add_argument("--deterministic", action="store_true",
                   help="CUDA: deterministic cuDNN and kernels, so that reruns and resumed "
                        "trainings repeat bit for bit (slower; the CPU is deterministic with "
                        "one thread already); without it cuDNN picks the fastest kernels")

    g = parser.add_argument_group("method")
    g.add_argument("--model", type=_model, default=default("model"),
                   metavar=_choices((*model_names(), "PATH")),
                   help=f"{', '.join(model_names())} or a model folder; default: a trained "
                        "model in OUTPUT_DIR/models/, else the tissue baseline")
    g.add_argument("--seed", type=_seed, default=default("seed"), metavar="N",
                   help="random seed (default: %(default)s)")
    g.add_argument("--skullstrip", choices=["deepbet", "template"],
                   default=default("skullstrip"),
                   help="brain extraction method (default: %(default)s)")
    g.add_argument("--pet-fwhm", dest="pet_fwhm", type=_positive_float,
                   default=default("pet_fwhm"),
                   metavar="MM", help="PET resolution for the tissue model (default: %(default)s)")
    g.add_argument("--force", action="store_true",
                   help="redo participants whose outputs are complete (with --train: retrain "
                        "from scratch)")
    g.add_argument("--n-samples", dest="n_samples", type=_positive_int,
                   default=default("n_samples"), metavar="N",
                   help="SynDiff: stochastic samples averaged into the pseudo-normal PET; > 1 "
                        "also writes a standard-deviation map (default: %(default)s)")
    g.add_argument("--calibration", choices=list(CALIBRATIONS), default=default("calibration"),
                   help="learned models: compartments = multiply the prediction by smooth "
                        "per-compartment gains fitted robustly to the subject's own PET (its "
                        "regional levels, which no T1w predicts); none = the prediction as it "
                        "is. The tissue baseline is always fitted (default: %(default)s)")

    g = parser.add_argument_group("training (group level with --train)")
    g.add_argument("--train", action="store_true",
                   help=f"train --model {'|'.join(trainable_models())} on the healthy controls "
                        "into OUTPUT_DIR/models/<name>/")
    g.add_argument("--preset", choices=[AUTO_PRESET, *PRESETS], default=default("preset"),
                   help="network size and model grid: paper (1 mm, 256x256, GPU), small "
                        "(2 mm, CPU-trainable), tiny (tests); auto = paper on a GPU, small on "
                        "CPU (default: %(default)s)")
    g.add_argument("--model-name", dest="model_name", type=_label,
                   default=default("model_name") or None, metavar="NAME",
                   help="folder name under OUTPUT_DIR/models (default: the model type)")
    g.add_argument("--train-steps", dest="train_steps", type=_positive_int,
                   default=default("train_steps"),
                   metavar="N", help="optimisation steps (default: the preset's)")
    g.add_argument("--batch-size", dest="batch_size", type=_positive_int,
                   default=default("batch_size"),
                   metavar="N", help="slices per domain per step (default: the preset's)")
    g.add_argument("--accumulate", type=_positive_int, default=default("accumulate"),
                   metavar="N",
                   help="gradient-accumulation micro-batches per step (default: %(default)s; "
                        "raised automatically when CUDA runs out of memory)")
    g.add_argument("--context-slices", dest="context_slices", type=int_in(0, 8),
                   default=default("context_slices"),
                   metavar="K", help="2.5D input: K neighbouring slices on each side "
                                     "(default: %(default)s)")
    g.add_argument("--val-controls", dest="val_controls", type=int_in(0),
                   default=default("val_controls"),
                   metavar="N", help="paired controls held out for validation (default: 2 with "
                                     ">= 6 paired controls, 1 with >= 3, else 0)")
    g.add_argument("--val-every", dest="val_every", type=int_in(0),
                   default=default("val_every"), metavar="N",
                   help="validate every N steps (default: only at the end)")
    g.add_argument("--checkpoint-every", dest="checkpoint_every", type=_positive_int,
                   default=default("checkpoint_every"), metavar="N",
                   help="save resumable state every N steps (default: %(default)s)")
    g.add_argument("--checkpoint-minutes", dest="checkpoint_minutes", type=_positive_float,
                   default=default("checkpoint_minutes"), metavar="MIN",
                   help="... or every MIN minutes, whichever comes first (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted training from its last checkpoint")
    g.add_argument("--compile", action="store_true",
                   help="compile the networks with torch.compile: minutes of compilation "
                        "first, then faster steps (CUDA; docs/performance.md)")

    g = parser.add_argument_group("detection")
    g.add_argument("--z-threshold", dest="z_threshold", type=_positive_float,
                   default=default("z_threshold"),
                   metavar="Z",
                   help="hypometabolism where Z < -T (default: %(default)s, one-sided p=0.05)")
    g.add_argument("--cluster-min-volume", dest="cluster_min_volume", type=_positive_float,
                   default=default("cluster_min_volume"), metavar="MM3",
                   help="smallest reported cluster in mm^3 (default: %(default)s)")
    g.add_argument("--gm-threshold", dest="gm_threshold", type=_fraction,
                   default=default("gm_threshold"),
                   metavar="P",
                   help="grey-matter probability defining GM (default: %(default)s)")
    g.add_argument("--connectivity", type=int, choices=[6, 18, 26],
                   default=default("connectivity"),
                   help="voxel neighbourhood of clusters (default: %(default)s)")
    g.add_argument("--search-region", dest="search_region", choices=["cortex", "gm"],
                   default=default("search_region"),
                   help="grey matter searched: cortex = the eight lobar regions, where a focus "
                        "can be reported; gm = also deep nuclei, insula, cingulate, cerebellum "
                        "(default: %(default)s)")
    rules = "; ".join(f"{name} = Z against the {get_rule(name).reference_name}"
                      + (f" (needs {', '.join(get_rule(name).needs)})" if get_rule(name).needs
                         else "") for name in rule_names())
    g.add_argument("--z-reference", dest="z_reference", choices=list(rule_names()),
                   default=default("z_reference"),
                   help=f"detection rule: {rules}. The default is the paper's rule; it flags "
                        "~5%% of everyone's GM (default: %(default)s)")
    g.add_argument("--cluster-inference", dest="cluster_inference",
                   choices=["auto", "controls", "random-field"],
                   default=default("cluster_inference"),
                   help="corrected p of each cluster: controls = calibrated on the healthy "
                        "controls' clusters stored by group --build-normative (needs 10 "
                        "controls, the same model and detection settings); random-field = "
                        "Gaussian random-field fallback from the Z-map's smoothness (liberal); "
                        "auto = controls when such a calibration exists, else random-field, "
                        "saying why (default: %(default)s)")

    g = parser.add_argument_group("clinical report and DICOM export (participant level)")
    g.add_argument("--image-convention", dest="image_convention", choices=list(IMAGE_CONVENTIONS),
                   default=default("image_convention"),
                   help="left-right display of the PDF report and the DICOM images: "
                        "radiological = patient's right on the image's left (PACS); "
                        "neurological = patient's left on the left (default: %(default)s)")
    g.add_argument("--dicom-export", dest="dicom_export", action="store_true",
                   help="also write DICOM for PACS under sub-<L>/[ses-<S>/]dicom/: fused "
                        "T1w + Z secondary captures and the PDF report (RESEARCH USE)")
    g.add_argument("--dicom-reference", dest="dicom_reference", type=_existing_dir,
                   metavar="DIR",
                   help="with --dicom-export: the original T1w DICOM series, in "
                        "DIR/sub-<L>[/ses-<S>]/ (or DIR itself for one participant); adds a "
                        "DICOM SEG of the clusters and a Parametric Map of Z that reference "
                        "that series")

    g = parser.add_argument_group("evaluation (group level)")
    g.add_argument("--build-normative", dest="build_normative", action="store_true",
                   help="build the healthy-control normative model of --model's residuals "
                        "from the controls' participant outputs, into "
                        "OUTPUT_DIR/models/normative-<model>/ (for --z-reference controls)")
    g.add_argument("--fid-weights", dest="fid_weights", type=Path,
                   default=default("fid_weights") or None, metavar="FILE",
                   help="InceptionV3 weights for FID (pytorch-fid's pt_inception-2015-12-05 "
                        ".pth, or as .safetensors); never downloaded. Without it, FID is "
                        "left out of the translation metrics")
    g.add_argument("--translation-metrics", dest="translation_metrics",
                   choices=("learned", "all"), default=default("translation_metrics"),
                   help="models whose pseudo-normal PET of the held-out controls is scored "
                        "(SSIM, PSNR, spectra, FID): learned = the trained models; all = also "
                        "the tissue baseline, which is fitted to each subject's own PET, so "
                        "its scores mean little and take most of the group level's time "
                        "(default: %(default)s)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that belong to another level or mode (exit 64)."""
    if args.train and args.analysis_level != "group":
        parser.error("--train belongs to the group level: pseudopet BIDS OUT group --train ...")
    if args.train and (args.model not in model_names() or not model_spec(args.model).trainable):
        parser.error(f"--train needs --model {' or --model '.join(trainable_models())}")
    if args.build_normative and (args.analysis_level != "group" or args.train):
        parser.error("--build-normative belongs to the group level, without --train: "
                     "pseudopet BIDS OUT group --build-normative --model M")
    if args.z_reference != default("z_reference") and args.analysis_level != "participant":
        parser.error("--z-reference belongs to the participant level")
    if (args.dicom_export or args.dicom_reference) and args.analysis_level != "participant":
        parser.error("--dicom-export and --dicom-reference belong to the participant level")
    if args.dicom_reference and not args.dicom_export:
        parser.error("--dicom-reference needs --dicom-export")


def build_config(args: argparse.Namespace) -> RunConfig:
    """The run config from parsed arguments (absolute paths; the work folder defaults to
    ``OUTPUT_DIR_work`` beside the output folder).

    Raises
    ------
    InputError
        A ``-d`` dataset is not usable (exit 66).
    """
    values = dict(vars(args))
    out = Path(args.output_dir)
    values.update(
        bids_dir=str(args.bids_dir), output_dir=str(out),
        work_dir=str(Path(args.work_dir) if args.work_dir else out.parent / f"{out.name}_work"),
        participant_label=list(args.participant_label), session_label=list(args.session_label),
        bids_filter_file=str(args.bids_filter_file or ""),
        bids_database_dir=str(args.bids_database_dir or ""),
        derivatives={k: str(v) for k, v in parse_derivative_specs(args.derivatives).items()}
        if args.derivatives else {},
        mem_gb=float(args.mem_gb or 0.0), model_name=args.model_name or "",
        fid_weights=str(Path(args.fid_weights).resolve()) if args.fid_weights else "",
        dicom_reference=str(args.dicom_reference or ""))
    return RunConfig.from_flat(values)


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def validate_paths(cfg: RunConfig) -> None:
    """Refuse outputs inside the input and unusable folders (exit 64 / 73)."""
    inp, work = cfg.input, cfg.execution.work_dir
    bids, out = Path(inp.bids_dir), Path(inp.output_dir)
    if _inside(out, bids):
        raise UsageError("the output folder is the input dataset or inside it", out,
                         "choose an output folder outside the BIDS dataset, e.g. "
                         f"{bids.parent / (bids.name + '_pseudopet')}")
    if work and _inside(Path(work), bids):
        raise UsageError("the work folder is inside the input dataset", Path(work),
                         "choose a work folder outside the BIDS dataset (-w)")
    for name, root in inp.derivatives.items():
        for what, folder in (("output", out), ("work", Path(work or out))):
            if _inside(folder, Path(root)):
                raise UsageError(f"the {what} folder is inside the --derivatives dataset "
                                 f"{name!r}", folder, "choose a folder outside the datasets "
                                 "pseudopet reads (they are never modified)")
    if work and _inside(Path(work), out):
        raise UsageError("the work folder is inside the output folder", Path(work),
                         "choose a work folder outside the output folder (-w)")
    if inp.bids_database_dir and _inside(Path(inp.bids_database_dir), bids):
        raise UsageError("the pybids database folder is inside the input dataset",
                         Path(inp.bids_database_dir), "choose a --bids-database-dir outside "
                         "the BIDS dataset (the input is never modified)")
