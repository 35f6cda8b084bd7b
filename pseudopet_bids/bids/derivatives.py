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
from typing import Any, Callable, Mapping

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


#: The derivative dataset's README (BIDS recommends one in every dataset's root).
README = """\
# pseudopet derivatives

Outputs of pseudopet, a BIDS App that predicts a pseudo-normal FDG PET from each participant's
T1w MRI, Z-scores the real minus the pseudo-normal PET in grey matter and reports the
hypometabolic clusters by lobe.

- `sub-<label>/anat/`: the T1w in RAS orientation (the T1w space of every output), brain mask,
  tissue probabilities, lobes, transforms to the template, the clusters as images
- `sub-<label>/pet/`: the PET and the pseudo-normal PET on the T1w grid, the Z map, the
  cluster table and the lobes' asymmetry
- `sub-<label>.html`: each participant's visual report; `group/`: group tables and report
- `logs/`: run configurations, progress, and `CITATION.md` (the methods text to cite)
- `models/`: trained and normative models, when built

Every image has a JSON sidecar naming its sources and the settings that made it. The dataset's
`GeneratedBy` says which pseudopet version (and container image, if any) wrote it.
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


#: Environment variable the project's container image sets to its own name and tag
#: (Dockerfile ``ENV``): only then is the image that made the derivatives known.
IMAGE_VARIABLE = "PSEUDOPET_CONTAINER_IMAGE"


def container_runtime(environ: Mapping[str, str], exists: Callable[[str], bool]) -> str | None:
    """The container runtime this process runs in, from its own markers, or None.

    Apptainer/Singularity set ``APPTAINER_CONTAINER``/``SINGULARITY_CONTAINER`` (also under
    ``--cleanenv``); podman writes ``/run/.containerenv``; docker ``/.dockerenv``. Apptainer is
    tested first: on a docker host its image has no ``/.dockerenv`` of its own, but podman's
    file may be bind-mounted into nested containers, so podman is tested before docker.

    Parameters
    ----------
    environ
        The process environment (``os.environ``).
    exists
        Whether a path exists (``os.path.exists``); a parameter so that tests need no container.
    """
    if any(environ.get(k) for k in ("APPTAINER_CONTAINER", "APPTAINER_NAME",
                                    "SINGULARITY_CONTAINER", "SINGULARITY_NAME")):
        return "apptainer"
    if exists("/run/.containerenv"):
        return "podman"
    if exists("/.dockerenv"):
        return "docker"
    return None


def container_record(environ: Mapping[str, str], exists: Callable[[str], bool]
                     ) -> dict[str, str] | None:
    """``GeneratedBy.Container`` of this run: the runtime and the project's image, or None.

    BIDS describes there the container *image* that made the derivatives. A ``pip install``
    inside some other container (a CI runner, a development VM) ran from no image of this
    project: recording only the runtime would suggest that it did, so the record is kept for
    the project's image (which names itself in :data:`IMAGE_VARIABLE`), whatever runtime runs
    it (docker, podman or apptainer; ``unknown`` when it leaves no marker).
    """
    image = environ.get(IMAGE_VARIABLE, "").strip()
    if not image:
        return None
    return {"Type": container_runtime(environ, exists) or "unknown", "Tag": image}


def dataset_description(bids_dir: Path, container: dict[str, str] | None = None,
                        derivatives: dict[str, str] | None = None,
                        authors: list[str] | None = None) -> dict[str, Any]:
    """Content of the derivative ``dataset_description.json`` (deterministic).

    ``container``: :func:`container_record` (None: not run from the project's image, no
    ``Container`` key). There is no public code repository yet, so no ``CodeURL`` (a
    placeholder address would be a false claim). ``derivatives`` (``-d`` name → root) become
    ``DatasetLinks`` so that the sidecars' ``bids:<name>:…`` URIs of reused files resolve, and
    ``SourceDatasets``. ``authors``: those of the input dataset (:func:`source_authors`),
    whose data the derivatives are; none, no ``Authors`` key.
    """
    generated: dict[str, Any] = {"Name": "pseudopet", "Version": __version__,
                 "Description": "Pseudo-normal FDG PET from T1w MRI and hypometabolism Z-maps"}
    if container:
        generated["Container"] = dict(container)
    links = {"raw": Path(bids_dir).resolve().as_uri()}
    links.update({k: Path(v).resolve().as_uri() for k, v in sorted((derivatives or {}).items())})
    desc: dict[str, Any] = {"Name": "pseudopet derivatives", "BIDSVersion": BIDS_VERSION,
                            "DatasetType": "derivative", "GeneratedBy": [generated]}
    if authors:
        desc["Authors"] = list(authors)
    desc.update({"DatasetLinks": links,
                 "SourceDatasets": [{"URL": url} for url in links.values()]})
    return desc


def source_authors(bids_dir: Path) -> list[str]:
    """``Authors`` of the input dataset's ``dataset_description.json`` (strings only; none
    when it has none or cannot be read: the input's validation reports that)."""
    try:
        authors = json.loads((Path(bids_dir) / "dataset_description.json").read_text()
                             ).get("Authors")
    except (OSError, ValueError, AttributeError):
        return []
    return [str(a) for a in authors if isinstance(a, str) and a.strip()] \
        if isinstance(authors, list) else []


def init_output(output_dir: Path, bids_dir: Path,
                derivatives: dict[str, str] | None = None) -> None:
    """Create the output folder with ``dataset_description.json``, ``.bidsignore`` and
    ``README.md``.

    Idempotent: the files are rewritten only when their content differs, atomically, so that
    concurrent participant jobs cannot leave them half-written. ``DatasetLinks`` of earlier
    runs (other ``--derivatives``) are kept: their URIs are in those runs' sidecars.
    """
    from urllib.parse import unquote, urlparse

    output_dir = Path(output_dir)
    container = container_record(os.environ, os.path.exists)
    links = dict(derivatives or {})
    try:
        old = json.loads((output_dir / "dataset_description.json").read_text())
        for name, url in old.get("DatasetLinks", {}).items():
            if name != "raw" and name not in links and str(url).startswith("file://"):
                links[name] = unquote(urlparse(url).path)
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or unreadable: rewritten below
    desc = json.dumps(jsonable(dataset_description(bids_dir, container, links,
                                                   source_authors(bids_dir))),
                      indent=2, sort_keys=True) + "\n"
    for name, text in (("dataset_description.json", desc), (".bidsignore", BIDSIGNORE),
                       ("README.md", README)):
        target = output_dir / name
        if not target.exists() or target.read_text() != text:
            atomic_write_text(target, text)

