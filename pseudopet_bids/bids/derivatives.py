"""BIDS-Derivatives naming: file names, sidecar paths, analysis labels, dataset files
(DESIGN.md §4).

The label grammar of ``desc`` entities is built here from the registries: a model's label
(:func:`model_label`) and an analysis label = model label + the detection rule's suffix
(:mod:`pseudopet_bids.detect.rules`). Writing bytes is :mod:`pseudopet_bids.io.files`' job.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pseudopet_bids import __version__
from pseudopet_bids.bids.entities import entity_prefix, parse_entities
from pseudopet_bids.io.files import atomic_write_text, jsonable

BIDS_VERSION = "1.10.0"

BIDSIGNORE = """\
# pseudopet outputs that the BIDS schema has no place for (folders without a trailing slash:
# bids-validator-deno does not match "group/" against the folder)
logs
models
group
**/figures
**/report
**/dicom
*.html
*_xfm.nii.gz
*_statmap.nii.gz
*_statmap.json
*Focus_clusters.tsv
*Focus_clusters.json
*_asymmetry.tsv
*_asymmetry.json
*Focus_mask.nii.gz
*Focus_mask.json
*Focus_dseg.nii.gz
*Focus_dseg.json
*Focus_dseg.tsv
"""


def model_label(name: str) -> str:
    """BIDS-safe label of a model name: lower-case letters and digits (``cyclegan_2mm`` →
    ``cyclegan2mm``)."""
    label = "".join(c for c in str(name).lower() if c.isalnum() and c.isascii())
    if not label:
        raise ValueError(f"model name {name!r} has no letters or digits to label outputs with")
    return label


def subject_key(subject: str, session: str | None = None) -> str:
    """``sub-L[_ses-S]``: the anat prefix, log key and normative-model key of a subject."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def sidecar(path: Path) -> Path:
    """The JSON sidecar of a derivative image (``x.nii.gz`` → ``x.json``)."""
    path = Path(path)
    return path.with_name(path.name.replace(".nii.gz", ".json").replace(".nii", ".json"))


#: Derivatives of a PET, named after its source prefix: kind → name after the prefix, where
#: ``{label}`` is the model label (``pseudonormal``) or the analysis label (``zmap``,
#: ``clusters``). :class:`SubjectPaths` writes these names and :func:`parse_pet_output` reads
#: them back (one grammar for both).
PET_OUTPUTS: dict[str, str] = {
    "preproc": "space-T1w_desc-preproc_pet.nii.gz",
    "pseudonormal": "space-T1w_desc-{label}Pseudonormal_pet.nii.gz",
    "zmap": "space-T1w_stat-z_desc-{label}_statmap.nii.gz",
    "clusters": "space-T1w_desc-{label}Focus_clusters.tsv",
    "asymmetry": "space-T1w_desc-{label}Lobes_asymmetry.tsv",
}


def _pet_output_pattern(template: str) -> re.Pattern[str]:
    body = re.escape(template).replace(r"\{label\}", "(?P<label>[A-Za-z0-9]+?)")
    body = body.replace(re.escape(".nii.gz"), r"\.nii(?:\.gz)?")
    return re.compile(r"^(?P<prefix>.+?)_" + body + "$")


_PET_OUTPUT_PATTERNS = {kind: _pet_output_pattern(t) for kind, t in PET_OUTPUTS.items()}


@dataclass(frozen=True)
class PetOutput:
    """What a derivative file name says: its PET source prefix, kind and label."""

    prefix: str
    kind: str
    label: str


def parse_pet_output(name: str) -> PetOutput | None:
    """Inverse of the :data:`PET_OUTPUTS` names (None for any other file)."""
    for kind, pattern in _PET_OUTPUT_PATTERNS.items():
        match = pattern.match(name)
        if match:
            return PetOutput(match["prefix"], kind, match.groupdict().get("label") or "")
    return None


def labelled_outputs(output_dir: Path, kind: str) -> list[tuple[Path, str]]:
    """``(file, label)`` of every output of ``kind`` (``pseudonormal``: label = model;
    ``clusters``, ``zmap``: label = analysis) in an output folder, sorted by path."""
    found = []
    for path in sorted(Path(output_dir).glob("sub-*/**/pet/*")):
        parsed = parse_pet_output(path.name)
        if parsed is not None and parsed.kind == kind and parsed.label:
            found.append((path, parsed.label))
    return found


def model_cards(output_dir: Path) -> dict[str, dict]:
    """Model label → card (``models/<name>/model.json``) of the trained models of a folder;
    unreadable cards are left out. JSON only: no torch import."""
    cards = {}
    for path in sorted((Path(output_dir) / "models").glob("*/model.json")):
        try:
            cards[model_label(path.parent.name)] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return cards


class SubjectPaths:
    """Derivative file names of one (subject, session), per DESIGN.md §4.

    Outputs that depend on the model carry its label in ``desc`` (``desc-<model>Pseudonormal``),
    and those that also depend on the Z reference carry the analysis label
    (``stat-z_desc-<analysis>``, ``desc-<analysis>Focus``), so that several models and both Z
    references can live side by side in one output folder.
    """

    def __init__(self, output_dir: Path, subject: str, session: str | None, pet_source: Path):
        for label in (subject, session):
            # every output path is built from these: only BIDS labels, never a path part
            if label is not None and not (isinstance(label, str) and label.isalnum()):
                raise ValueError(f"{label!r} is not a BIDS label (letters and digits)")
        self.root = Path(output_dir)
        prefix = subject_key(subject, session)
        folder = self.root / f"sub-{subject}" / (f"ses-{session}" if session else "")
        self.anat_dir = folder / "anat"
        self.pet_dir = folder / "pet"
        self.anat_prefix = prefix
        self.pet_prefix = entity_prefix(pet_source)
        self.subject = subject
        self.session = session

    @classmethod
    def of(cls, output_dir: Path, derivative: Path) -> "SubjectPaths":
        """The paths of the subject, session and PET a derivative file belongs to."""
        ents = parse_entities(derivative)
        return cls(output_dir, ents["sub"], ents.get("ses"), derivative)

    def anat(self, name: str) -> Path:
        """``<anat>/sub-L[_ses-S]_<name>``."""
        return self.anat_dir / f"{self.anat_prefix}_{name}"

    def pet(self, name: str) -> Path:
        """``<pet>/<source>_<name>``."""
        return self.pet_dir / f"{self.pet_prefix}_{name}"

    def xfm(self, source: str, target: str) -> Path:
        """Transform file name ``from-<source>_to-<target>_mode-image_xfm.nii.gz``."""
        return self.anat(f"from-{source}_to-{target}_mode-image_xfm.nii.gz")

    def _pet_output(self, kind: str, label: str, ext: str | None = None) -> Path:
        name = PET_OUTPUTS[kind].format(label=label)
        if ext is not None:
            name = name[:name.index(".")] + ext
        return self.pet(name)

    def pseudonormal(self, model: str, sd: bool = False, ext: str = ".nii.gz") -> Path:
        """``space-T1w_desc-<model>Pseudonormal[sd]_pet`` (model label from :func:`model_label`)."""
        path = self._pet_output("pseudonormal", model, ext)
        return path.with_name(path.name.replace("Pseudonormal_", "Pseudonormalsd_")) if sd \
            else path

    def zmap(self, analysis: str, ext: str = ".nii.gz") -> Path:
        """``space-T1w_stat-z_desc-<analysis>_statmap``."""
        return self._pet_output("zmap", analysis, ext)

    def clusters(self, analysis: str, ext: str = ".tsv") -> Path:
        """``space-T1w_desc-<analysis>Focus_clusters.tsv``."""
        return self._pet_output("clusters", analysis, ext)

    def focus_mask(self, analysis: str, ext: str = ".nii.gz") -> Path:
        """``desc-<analysis>Focus_mask`` (anat)."""
        return self.anat(f"desc-{analysis}Focus_mask{ext}")

    def focus_labels(self, analysis: str, ext: str = ".nii.gz") -> Path:
        """``desc-<analysis>Focus_dseg`` (anat): the clusters labelled by their table id."""
        return self.anat(f"desc-{analysis}Focus_dseg{ext}")

    def asymmetry(self, analysis: str, ext: str = ".tsv") -> Path:
        """``space-T1w_desc-<analysis>Lobes_asymmetry.tsv``: each lobe's asymmetry."""
        return self._pet_output("asymmetry", analysis, ext)

    def config(self, analysis: str) -> Path:
        """Per-subject TOML config of one analysis, written last: it marks it as finished."""
        return self.root / "logs" / f"{self.anat_prefix}_desc-{analysis}_config.toml"

    @property
    def status(self) -> Path:
        """Progress of the subject's latest run (``status.json``, docs/progress.md)."""
        return self.root / "logs" / f"{self.anat_prefix}_status.json"

    @property
    def figure_dir(self) -> Path:
        return self.root / f"sub-{self.subject}" / "figures"

    def figure(self, name: str) -> Path:
        """``sub-L/figures/sub-L[_ses-S]_<name>.png``."""
        return self.figure_dir / f"{self.anat_prefix}_{name}.png"


def bids_uri(bids_dir: Path, path: Path, dataset: str = "raw") -> str:
    """``bids:raw:sub-01/anat/sub-01_T1w.nii.gz`` for a file of the input dataset."""
    return f"bids:{dataset}:{Path(path).resolve().relative_to(Path(bids_dir).resolve()).as_posix()}"


def dataset_description(bids_dir: Path, container: str | None = None,
                        derivatives: dict[str, str] | None = None) -> dict[str, Any]:
    """Content of the derivative ``dataset_description.json`` (deterministic).

    ``derivatives`` (``-d`` name → root) become ``DatasetLinks`` so that the sidecars'
    ``bids:<name>:…`` URIs of reused files resolve, and ``SourceDatasets``.
    """
    generated: dict[str, Any] = {"Name": "pseudopet", "Version": __version__,
                 "Description": "Pseudo-normal FDG PET from T1w MRI and hypometabolism Z-maps",
                 "CodeURL": "https://github.com/pseudopet/pseudopet"}
    if container:
        generated["Container"] = {"Type": container}
    links = {"raw": Path(bids_dir).resolve().as_uri()}
    links.update({k: Path(v).resolve().as_uri() for k, v in sorted((derivatives or {}).items())})
    return {"Name": "pseudopet derivatives", "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative", "GeneratedBy": [generated],
            "DatasetLinks": links,
            "SourceDatasets": [{"URL": url} for url in links.values()]}


def init_output(output_dir: Path, bids_dir: Path,
                derivatives: dict[str, str] | None = None) -> None:
    """Create the output folder with ``dataset_description.json`` and ``.bidsignore``.

    Idempotent: the files are rewritten only when their content differs, atomically, so that
    concurrent participant jobs cannot leave them half-written. ``DatasetLinks`` of earlier
    runs (other ``--derivatives``) are kept: their URIs are in those runs' sidecars.
    """
    from urllib.parse import unquote, urlparse

    output_dir = Path(output_dir)
    container = "docker" if Path("/.dockerenv").exists() else (
        "singularity" if os.environ.get("SINGULARITY_NAME") or os.environ.get("APPTAINER_NAME")
        else None)
    links = dict(derivatives or {})
    try:
        old = json.loads((output_dir / "dataset_description.json").read_text())
        for name, url in old.get("DatasetLinks", {}).items():
            if name != "raw" and name not in links and str(url).startswith("file://"):
                links[name] = unquote(urlparse(url).path)
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or unreadable: rewritten below
    desc = json.dumps(jsonable(dataset_description(bids_dir, container, links)), indent=2,
                      sort_keys=True) + "\n"
    for name, text in (("dataset_description.json", desc), (".bidsignore", BIDSIGNORE)):
        target = output_dir / name
        if not target.exists() or target.read_text() != text:
            atomic_write_text(target, text)

