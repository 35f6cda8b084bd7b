"""One serialisable run configuration (dataclass → TOML), saved per run and per subject."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pseudopet_bids import __version__

#: Fields that change what a subject's derivatives contain; their hash decides whether a
#: finished subject must be redone on rerun.
OUTPUT_FIELDS = ("model", "model_sha256", "n_samples", "seed", "z_threshold",
                 "cluster_min_volume", "gm_threshold", "z_reference", "normative_sha256",
                 "connectivity", "search_region", "skullstrip", "normalization", "pet_fwhm",
                 "allow_any_tracer", "derivatives", "template_source", "version")


@dataclass
class RunConfig:
    """Everything a run depends on. Paths are absolute; all values are TOML-serialisable.

    Attributes mirror the command-line options of ``pseudopet`` (see ``cli/parser.py``).
    """

    bids_dir: str
    output_dir: str
    analysis_level: str
    work_dir: str = ""
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filter_file: str = ""
    bids_database_dir: str = ""
    derivatives: dict[str, str] = field(default_factory=dict)  # -d NAME=PATH
    template_source: str = ""  # filled in at run time: TemplateFlow home or packaged copy
    skip_bids_validation: bool = False
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float = 0.0
    device: str = "auto"
    model: str = "auto"
    seed: int = 42
    force: bool = False
    verbosity: int = 0
    z_threshold: float = 1.65
    cluster_min_volume: float = 1500.0
    gm_threshold: float = 0.5
    connectivity: int = 26
    search_region: str = "cortex"
    skullstrip: str = "deepbet"
    normalization: str = "gm-median"
    pet_fwhm: float = 6.0
    allow_any_tracer: bool = False
    # trained models (participant level)
    n_samples: int = 1
    model_sha256: str = ""  # filled in at run time: the weights that made the outputs
    z_reference: str = "subject"
    normative_sha256: str = ""  # filled in at run time with --z-reference controls
    # group-level training
    train: bool = False
    preset: str = "paper"
    model_name: str = ""
    train_steps: int = 0  # 0: the preset's default
    batch_size: int = 0  # 0: the preset's default
    accumulate: int = 1
    context_slices: int = 0
    val_controls: int | None = None
    val_every: int = 0
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    resume: bool = False
    # group-level evaluation
    build_normative: bool = False
    fid_weights: str = ""
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (None values, which TOML cannot hold, left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def output_hash(self) -> str:
        """sha256 of the fields that determine a subject's derivatives (first 16 hex digits)."""
        subset = {k: getattr(self, k) for k in OUTPUT_FIELDS}
        return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        """TOML text of the config (with its output hash as a comment)."""
        import tomli_w

        return f"# pseudopet {__version__} run configuration; output hash {self.output_hash()}\n" \
            + tomli_w.dumps({"pseudopet": self.to_dict()})

    @classmethod
    def from_toml(cls, path: Path) -> "RunConfig":
        """Read a config written by :meth:`to_toml`."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        data = tomllib.loads(Path(path).read_text())["pseudopet"]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
