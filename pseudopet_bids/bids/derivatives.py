"""BIDS-Derivatives output: file names, sidecars, dataset files and atomic writes (DESIGN.md §4).

Every file is written to a temporary file in its own folder and renamed into place, so a killed
run never leaves a half-written file under a final name. ``.nii.gz`` files are gzipped with
mtime 0 and no embedded file name, so identical data give byte-identical files; level 1, because
level 6 took three times longer for 5 % smaller files (float images compress poorly). ``.npz``
archives (work-dir caches) carry a fixed zip date for the same reason.

Temporary files carry their owner, ``.pp-<host>-<pid>``, in their name, so that the cleanup of
what killed runs left never touches the live temporary file of a concurrent job
(``bids/temporaries.py``; docs/reliability.md, "Crash safety and idempotence").
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from pseudopet_bids import __version__
from pseudopet_bids.bids.entities import entity_prefix, parse_entities
from pseudopet_bids.bids.temporaries import TMP_SUFFIX, temp_prefix
from pseudopet_bids.errors import OutputError

BIDS_VERSION = "1.10.0"

BIDSIGNORE = """\
# pseudopet outputs that the BIDS schema has no place for (folders without a trailing slash:
# bids-validator-deno does not match "group/" against the folder)
logs
models
group
**/figures
*.html
*_xfm.nii.gz
*_statmap.nii.gz
*_statmap.json
*Focus_clusters.tsv
*Focus_clusters.json
*Focus_mask.nii.gz
*Focus_mask.json
"""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` through a temporary file in the same folder and a rename.

    The temporary file, ``.<name>.pp-<host>-<pid>-<random>.tmp``, is flushed to disk
    (``fsync``) before the rename, so the final name holds either the old or the whole new
    content, also after a power cut.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TMP_SUFFIX,
                                   dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write ({exc.strerror or exc})", path,
                          "check that the output folder is writable and has free space") from exc


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """An ``.npz`` archive of ``arrays`` (as :func:`numpy.savez`, read by :func:`numpy.load`
    without pickle) whose zip entries carry a fixed date: ``np.savez`` stamps the current
    time, so equal arrays would give different bytes."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON sidecar atomically, keys sorted, 2-space indent."""
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


def write_tsv(path: Path, table: pd.DataFrame) -> None:
    """Write a TSV atomically with ``n/a`` for missing values."""
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a",
                                         float_format="%.6g", lineterminator="\n"))


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype: Any = np.float32,
                intent: str | None = None) -> None:
    """Write a NIfTI-1 image deterministically (gzip mtime 0) and atomically."""
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if intent:
        img.header.set_intent(intent)
    atomic_write_bytes(path, nifti_bytes(img, gzipped=str(path).endswith(".gz")))


def nifti_bytes(img: nib.Nifti1Image, gzipped: bool = True) -> bytes:
    """The file content of an image; gzipped with mtime 0 and no name, so it is reproducible."""
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=1, mtime=0) if gzipped else raw


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


Z_REFERENCES: tuple[str, ...] = ("subject", "controls")


def model_label(name: str) -> str:
    """BIDS-safe label of a model name: lower-case letters and digits (``cyclegan_2mm`` →
    ``cyclegan2mm``)."""
    label = "".join(c for c in str(name).lower() if c.isalnum() and c.isascii())
    if not label:
        raise ValueError(f"model name {name!r} has no letters or digits to label outputs with")
    return label


def analysis_label(model: str, z_reference: str = "subject") -> str:
    """``desc`` label of the Z-map, clusters and focus mask: the model label, plus ``Norm`` when
    Z is taken against the healthy-control normative model (``--z-reference controls``)."""
    if z_reference not in Z_REFERENCES:
        raise ValueError(f"unknown z reference {z_reference!r}; choose from {Z_REFERENCES}")
    return model_label(model) + ("Norm" if z_reference == "controls" else "")


def parse_analysis_label(label: str) -> tuple[str, str]:
    """Inverse of :func:`analysis_label`: ``(model label, z reference)``."""
    if label.endswith("Norm"):
        return label[:-4], "controls"
    return label, "subject"


def subject_key(subject: str, session: str | None = None) -> str:
    """``sub-L[_ses-S]``: the anat prefix, log key and normative-model key of a subject."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def sidecar(path: Path) -> Path:
    """The JSON sidecar of a derivative image (``x.nii.gz`` → ``x.json``)."""
    path = Path(path)
    return path.with_name(path.name.replace(".nii.gz", ".json").replace(".nii", ".json"))


#: Derivatives carrying a label in ``desc``: kind → (glob under OUTPUT_DIR, suffix of the desc).
LABELLED = {"pseudonormal": ("sub-*/**/pet/*_desc-*Pseudonormal_pet.nii.gz", "Pseudonormal"),
            "clusters": ("sub-*/**/pet/*_desc-*Focus_clusters.tsv", "Focus")}


def labelled_outputs(output_dir: Path, kind: str) -> list[tuple[Path, str]]:
    """``(file, label)`` of every pseudo-normal PET (label = model) or cluster table (label =
    analysis) in an output folder, sorted by path."""
    pattern, suffix = LABELLED[kind]
    found = []
    for path in sorted(Path(output_dir).glob(pattern)):
        desc = parse_entities(path).get("desc", "")
        if desc.endswith(suffix) and len(desc) > len(suffix):
            found.append((path, desc[:-len(suffix)]))
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

    def pseudonormal(self, model: str, sd: bool = False, ext: str = ".nii.gz") -> Path:
        """``space-T1w_desc-<model>Pseudonormal[sd]_pet`` (model label from :func:`model_label`)."""
        return self.pet(f"space-T1w_desc-{model}Pseudonormal{'sd' if sd else ''}_pet{ext}")

    def zmap(self, analysis: str, ext: str = ".nii.gz") -> Path:
        """``space-T1w_stat-z_desc-<analysis>_statmap``."""
        return self.pet(f"space-T1w_stat-z_desc-{analysis}_statmap{ext}")

    def clusters(self, analysis: str, ext: str = ".tsv") -> Path:
        """``space-T1w_desc-<analysis>Focus_clusters.tsv``."""
        return self.pet(f"space-T1w_desc-{analysis}Focus_clusters{ext}")

    def focus_mask(self, analysis: str, ext: str = ".nii.gz") -> Path:
        """``desc-<analysis>Focus_mask`` (anat)."""
        return self.anat(f"desc-{analysis}Focus_mask{ext}")

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
    generated = {"Name": "pseudopet", "Version": __version__,
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
    desc = json.dumps(_jsonable(dataset_description(bids_dir, container, links)), indent=2,
                      sort_keys=True) + "\n"
    for name, text in (("dataset_description.json", desc), (".bidsignore", BIDSIGNORE)):
        target = output_dir / name
        if not target.exists() or target.read_text() != text:
            atomic_write_text(target, text)

