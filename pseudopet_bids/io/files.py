"""File primitives: atomic writes, deterministic NIfTI/JSON/TSV/NPZ bytes, sha256.

Every file is written to a temporary file in its own folder and renamed into place, so a killed
run never leaves a half-written file under a final name. ``.nii.gz`` files are gzipped with
mtime 0 and no embedded file name, so identical data give byte-identical files; level 1, because
level 6 took three times longer for 5 % smaller files (float images compress poorly). ``.npz``
archives (work-dir caches) carry a fixed zip date for the same reason.

Temporary files carry their owner, ``.pp-<host>-<pid>``, in their name, so that the cleanup of
what killed runs left never touches the live temporary file of a concurrent job
(:mod:`pseudopet_bids.io.temporaries`; docs/reliability.md, "Crash safety and idempotence").

This module knows nothing of BIDS names (``bids/derivatives.py``) and imports only
``errors`` and ``io.temporaries`` from the package.
"""

from __future__ import annotations

import gzip
import hashlib
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

from pseudopet_bids.errors import OutputError
from pseudopet_bids.io.temporaries import TMP_SUFFIX, temp_prefix


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    time, so equal arrays would give different bytes.

    ``compress`` deflates at level 1, as the ``.nii.gz`` files: on a subject's preprocessing
    cache (float volumes) zlib's default level 6 took 1.5 times as long for 3 % less.
    """
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asanyarray(value), allow_pickle=False)
            archive.writestr(info, npy.getbuffer(), compress_type=method,
                             compresslevel=1 if compress else None)
    return buf.getvalue()


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON sidecar atomically, keys sorted, 2-space indent."""
    atomic_write_text(path, json.dumps(jsonable(data), indent=2, sort_keys=True) + "\n")


def write_tsv(path: Path, table: pd.DataFrame) -> None:
    """Write a TSV atomically with ``n/a`` for missing values."""
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a",
                                         float_format="%.6g", lineterminator="\n"))


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype: Any = np.float32,
                intent: str | None = None) -> None:
    """Write a NIfTI-1 image deterministically (gzip mtime 0) and atomically."""
    # Fortran order, the order of NIfTI's voxels: serialising is then a plain copy (a C-order
    # array is transposed in chunks, 30 % more time for the same bytes)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype, order="F"), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if intent:
        img.header.set_intent(intent)
    atomic_write_bytes(path, nifti_bytes(img, gzipped=str(path).endswith(".gz")))


def nifti_bytes(img: nib.Nifti1Image, gzipped: bool = True) -> bytes:
    """The file content of an image; gzipped with mtime 0 and no name, so it is reproducible."""
    if not gzipped:
        return img.to_bytes()
    # compressed from the serialising buffer itself (``to_bytes`` would copy it once more)
    raw = io.BytesIO()
    img.to_stream(raw)
    return gzip.compress(raw.getbuffer(), compresslevel=1, mtime=0)


def jsonable(value: Any) -> Any:
    """``value`` with paths as strings, numpy scalars as Python numbers and non-finite floats
    as None (JSON has no NaN), recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
