"""One serialisable run configuration in sections (dataclasses → TOML), saved per run and per
subject.

Every default is defined here, once: ``cli/parser.py`` reads its option defaults from these
dataclasses. Each step receives the section it needs (``cfg.detection``, ``cfg.preproc``, …),
not the whole configuration.

Sections
--------
``input``      the dataset, the selection of participants and files, reused derivatives
``preproc``    brain extraction and the template
``synthesis``  the pseudo-normal PET model and the PET intensity normalisation
``detection``  the detection rule (Z reference) and its thresholds
``training``   group-level ``--train``
``group``      group-level evaluation (``--build-normative``, ``--fid-weights``)
``report``     the clinical PDF and the DICOM export (image convention, ``--dicom-export``)
``execution``  folders, parallelism, device, seed, rerun policy, verbosity
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from pseudopet_bids import __version__


def default_threads() -> int:
    """Threads per participant when ``--omp-nthreads`` is not given: the cores, at most 8."""
    return min(os.cpu_count() or 1, 8)


@dataclass
class InputConfig:
    """What is read: the dataset, the selection and the reused derivatives."""

    bids_dir: str = ""
    output_dir: str = ""
    analysis_level: str = "participant"
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filter_file: str = ""
    bids_database_dir: str = ""
    derivatives: dict[str, str] = field(default_factory=dict)  # -d NAME=PATH
    skip_bids_validation: bool = False
    allow_any_tracer: bool = False


@dataclass
class PreprocConfig:
    """Preprocessing of the T1w and the PET."""

    skullstrip: str = "deepbet"
    template_source: str = ""  # filled in at run time: TemplateFlow home or packaged copy


#: ``--calibration`` choices (:mod:`pseudopet_bids.synthesis.calibrate`): ``none`` (a learned
#: prediction as it is) and ``compartments`` (per-compartment gains fitted to the subject's PET).
CALIBRATIONS = ("none", "compartments")


@dataclass
class SynthesisConfig:
    """The pseudo-normal PET: which model, how it is sampled, how PET is normalised."""

    model: str = "auto"
    model_sha256: str = ""  # filled in at run time: the weights that made the outputs
    # SynDiff: 4 samples measured best for their cost (docs/syndiff_sampling.md: validation SSIM
    # 0.895 / 0.909 / 0.911 for 1 / 4 / 8 samples); deterministic models ignore it
    n_samples: int = 4
    calibration: str = "compartments"  # learned models: synthesis/calibrate.py
    pet_fwhm: float = 6.0
    normalization: str = "gm-median"


@dataclass
class DetectionConfig:
    """The detection rule (``z_reference``, :mod:`pseudopet_bids.detect.rules`) and the
    thresholds of the Z-map and the clusters."""

    z_reference: str = "subject"
    z_threshold: float = 1.65
    cluster_min_volume: float = 1500.0
    gm_threshold: float = 0.5
    connectivity: int = 26
    search_region: str = "cortex"
    normative_sha256: str = ""  # filled in at run time by rules that need a normative model
    cluster_inference: str = "auto"  # auto | controls | random-field (detect/calibration.py)
    calibration_sha256: str = ""  # filled in at run time: the controls' calibration used


@dataclass
class TrainingConfig:
    """Group-level ``--train`` (0 = the preset's default for steps and batch size)."""

    train: bool = False
    preset: str = "auto"  # paper on CUDA, small on CPU (models/presets.py)
    model_name: str = ""
    train_steps: int = 0
    batch_size: int = 0
    accumulate: int = 1
    context_slices: int = 0
    val_controls: int | None = None
    val_every: int = 0
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    resume: bool = False
    compile: bool = False  # torch.compile the networks (worth it on CUDA, long trainings)


@dataclass
class GroupConfig:
    """Group-level evaluation modes."""

    build_normative: bool = False
    fid_weights: str = ""
    #: ``learned``: translation metrics for the trained models only; ``all``: also for the
    #: non-learned baseline (fitted to each subject's own PET: they mean little, and took
    #: 48 of 57 s of a 4-subject group run on a 2-core VM)
    translation_metrics: str = "learned"


#: ``--image-convention`` choices (:mod:`pseudopet_bids.reports.planes`).
IMAGE_CONVENTIONS = ("radiological", "neurological")


@dataclass
class ReportConfig:
    """The clinical PDF report and the DICOM export (``reports/pdf_report.py``,
    ``reports/dicom_export.py``)."""

    image_convention: str = "radiological"
    dicom_export: bool = False
    dicom_reference: str = ""  # folder of the subjects' original T1w DICOM series


@dataclass
class ExecutionConfig:
    """Where and how the work runs."""

    work_dir: str = ""
    nprocs: int = 1
    omp_nthreads: int = field(default_factory=default_threads)
    mem_gb: float = 0.0
    device: str = "auto"
    deterministic: bool = False  # CUDA: deterministic cuDNN and kernels (slower)
    seed: int = 42
    force: bool = False
    verbosity: int = 0


#: Section name → dataclass, in the order of the saved TOML.
SECTIONS: dict[str, type] = {
    "input": InputConfig, "preproc": PreprocConfig, "synthesis": SynthesisConfig,
    "detection": DetectionConfig, "training": TrainingConfig, "group": GroupConfig,
    "report": ReportConfig, "execution": ExecutionConfig,
}
#: Field name → section name (field names are unique across sections).
FIELD_SECTION: dict[str, str] = {f.name: name for name, cls in SECTIONS.items()
                                 for f in dataclasses.fields(cls)}

#: Fields that change what a subject's derivatives contain; their hash decides whether a
#: finished subject must be redone on rerun.
OUTPUT_FIELDS = ("model", "model_sha256", "n_samples", "calibration", "seed", "z_threshold",
                 "cluster_min_volume", "gm_threshold", "z_reference", "normative_sha256",
                 "cluster_inference", "calibration_sha256",
                 "connectivity", "search_region", "skullstrip", "normalization", "pet_fwhm",
                 "allow_any_tracer", "derivatives", "template_source", "version",
                 "image_convention", "dicom_export", "dicom_reference")


def default(name: str) -> Any:
    """The default value of a field, by its name (used by the parser)."""
    cls = SECTIONS[FIELD_SECTION[name]]
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


@dataclass
class RunConfig:
    """Everything a run depends on, in sections. Paths are absolute; values are TOML-able."""

    input: InputConfig = field(default_factory=InputConfig)
    preproc: PreprocConfig = field(default_factory=PreprocConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    version: str = __version__

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> "RunConfig":
        """A config from field names and values (unknown names are ignored, missing ones take
        their defaults): the parsed command line, or a record of an earlier release."""
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in values.items():
            if key in FIELD_SECTION:
                parts[FIELD_SECTION[key]][key] = value
        cfg = cls(**{name: SECTIONS[name](**parts[name]) for name in SECTIONS})
        if "version" in values:
            cfg.version = str(values["version"])
        return cfg

    def flat(self) -> dict[str, Any]:
        """Field name → value over all sections (and ``version``)."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, name)))
        out["version"] = self.version
        return out

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with fields changed by name (``cfg.replace(model_sha256=...)``)."""
        sections = {name: getattr(self, name) for name in SECTIONS}
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key not in FIELD_SECTION:
                raise TypeError(f"RunConfig has no field {key!r}")
            by_section.setdefault(FIELD_SECTION[key], {})[key] = value
        for name, fields in by_section.items():
            sections[name] = dataclasses.replace(sections[name], **fields)
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict[str, Any]:
        """``{section: {field: value}}`` plus ``version`` (None values, which TOML cannot
        hold, left out)."""
        out: dict[str, Any] = {"version": self.version}
        for name in SECTIONS:
            out[name] = {k: v for k, v in dataclasses.asdict(getattr(self, name)).items()
                         if v is not None}
        return out

    def output_hash(self) -> str:
        """sha256 of the fields that determine a subject's derivatives (first 16 hex digits)."""
        flat = self.flat()
        subset = {k: flat[k] for k in OUTPUT_FIELDS}
        return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()[:16]

    def changed_output_fields(self, other: "RunConfig") -> list[str]:
        """Names of the output fields whose values differ between two configs."""
        mine, theirs = self.flat(), other.flat()
        return [k for k in OUTPUT_FIELDS if mine[k] != theirs[k]]

    def to_toml(self) -> str:
        """TOML text of the config (with its output hash as a comment)."""
        return f"# pseudopet {__version__} run configuration; output hash {self.output_hash()}\n" \
            + tomli_w.dumps({"pseudopet": self.to_dict()})

    @classmethod
    def from_toml(cls, path: Path) -> "RunConfig":
        """Read a config written by :meth:`to_toml` (or the flat table of release 0.1.0)."""
        return cls.from_flat(flatten_record(tomllib.loads(Path(path).read_text())["pseudopet"]))


def flatten_record(table: dict[str, Any]) -> dict[str, Any]:
    """Field name → value of a saved ``[pseudopet]`` table: its sections merged (the flat table
    of release 0.1.0 is returned as it is)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat
