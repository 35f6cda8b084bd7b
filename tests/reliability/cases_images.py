"""Value and corruption cases: what image intake refuses, accepts, and how it says so.

Most datasets here hold a second, intact participant (``sub-02``): it must still run while
``sub-01`` is refused.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from tests.conftest import blob, write_image
from tests.reliability.corpus import (PET, PET_JSON, T1, case, dataset, html_page, nifti, probed,
                                      real)
from tests.reliability.harness import Scenario

TWO = {"01": {}, "02": {}}


def _pair(tmp: Path) -> Path:
    return dataset(tmp, TWO)


def _fails(root: Path, rel: str, fix: str) -> Scenario:
    """sub-01 fails at image intake naming ``rel``; sub-02 passes."""
    return Scenario(root, file=rel, fix=fix, ran={"sub-02"}, failed={"sub-01"})


def _skipped(root: Path, rel: str, fix: str) -> Scenario:
    """sub-01 is skipped at pre-flight naming ``rel``; sub-02 runs."""
    return Scenario(root, file=rel, fix=fix, ran={"sub-02"})


# --------------------------------------------------------------------------- values


@case("values", "NaN voxels in the T1w", 1, "sub-01 fails at intake; sub-02 runs",
      "T1w contains 1 non-finite (NaN/inf) voxels")
def nan_in_t1w(tmp: Path) -> Scenario:
    root = _pair(tmp)
    data = blob()
    data[4, 4, 4] = np.nan
    write_image(root / T1, data)
    return _fails(root, T1, "without NaN/inf")


@case("values", "+inf voxels in the PET", 1, "sub-01 fails at intake; sub-02 runs",
      "PET contains 2 non-finite (NaN/inf) voxels")
def inf_in_pet(tmp: Path) -> Scenario:
    root = _pair(tmp)
    data = blob()
    data[4, 4, 4:6] = np.inf
    write_image(root / PET, data)
    return _fails(root, PET, "without NaN/inf")


@case("values", "all-zero PET", 1, "sub-01 fails at intake; sub-02 runs",
      "PET contains only zeros")
def all_zero_pet(tmp: Path) -> Scenario:
    root = _pair(tmp)
    write_image(root / PET, np.zeros((20, 22, 18)))
    return _fails(root, PET, "give the real image")


@case("values", "constant T1w", 1, "sub-01 fails at intake; sub-02 runs", "T1w is constant")
def constant_t1w(tmp: Path) -> Scenario:
    root = _pair(tmp)
    write_image(root / T1, np.full((20, 22, 18), 7.0))
    return _fails(root, T1, "give the real image")


@case("values", "negative PET (sign inverted)", 1,
      "sub-01 fails at intake (was: accepted); sub-02 runs", "PET is mostly negative")
def negative_pet(tmp: Path) -> Scenario:
    root = _pair(tmp)
    write_image(root / PET, -blob() - 1.0)
    return _fails(root, PET, "reconstructed activity image")


@case("values", "PET with some negative voxels (reconstruction noise)", 0,
      "runs; the values are kept as they are")
def pet_with_negative_noise(tmp: Path) -> Scenario:
    root = dataset(tmp)
    data = blob() - 5.0  # the background around the head dips below zero
    write_image(root / PET, data)

    def verify(run) -> None:
        pet = np.asarray(probed(run)["images"].pet.dataobj)
        np.testing.assert_allclose(pet.min(), data.min(), rtol=1e-6)

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("values", "int16 PET with scl_slope 0.25 and scl_inter 3", 0,
      "runs; voxels = stored x slope + inter, as float32")
def int16_with_scaling(tmp: Path) -> Scenario:
    root = dataset(tmp)
    raw = np.round(blob() * 300).astype(np.int16)
    nifti(root / PET, raw, dtype=np.int16, scaling=(0.25, 3.0))

    def verify(run) -> None:
        pet = np.asarray(probed(run)["images"].pet.dataobj)
        np.testing.assert_allclose(pet, raw * 0.25 + 3.0, rtol=1e-6)

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("values", "huge dynamic range (1e-20 to 1e30 in float32)", 0,
      "runs; values kept exactly (no clipping, no 8-bit conversion)")
def huge_dynamic_range(tmp: Path) -> Scenario:
    root = dataset(tmp)
    data = (blob() + 1e-20).astype(np.float32)
    data[5, 5, 5] = 1e30
    write_image(root / PET, data)

    def verify(run) -> None:
        np.testing.assert_array_equal(np.asarray(probed(run)["images"].pet.dataobj), data)

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("values", "float64 PET with values beyond the float32 range (1e40)", 1,
      "sub-01 fails at intake with the reason (was: reported as NaN/inf voxels)",
      "value(s) beyond the float32 range")
def beyond_float32(tmp: Path) -> Scenario:
    root = _pair(tmp)
    data = blob().astype(np.float64) + 1.0
    data[5, 5, 5] = 1e40
    nifti(root / PET, data, dtype=np.float64)
    return _fails(root, PET, "rescale the image")


@case("values", "T1w one voxel thick (20 x 22 x 1)", 1, "sub-01 fails at intake; sub-02 runs",
      "T1w is too small")
def one_voxel_thick(tmp: Path) -> Scenario:
    root = _pair(tmp)
    write_image(root / T1, blob((20, 22, 1)))
    return _fails(root, T1, "give a full 3D volume")


# --------------------------------------------------------------------------- corruption


def _truncate(path: Path, keep: int | None = None) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 if keep is None else keep])


@case("corruption", "truncated .nii.gz (header intact)", 1,
      "sub-01 fails at intake; sub-02 runs", "the file is truncated or corrupt")
def truncated_niigz(tmp: Path) -> Scenario:
    root = _pair(tmp)
    write_image(root / T1, blob((40, 40, 40)) + 1)
    _truncate(root / T1)
    return _fails(root, T1, "check that the download finished")


@case("corruption", "truncated .nii.gz (30 bytes left: no header)", 0,
      "sub-01 skipped at pre-flight; sub-02 runs", "is not a readable NIfTI")
def truncated_niigz_no_header(tmp: Path) -> Scenario:
    root = _pair(tmp)
    _truncate(root / PET, 30)
    return _skipped(root, PET, "re-export it as NIfTI")


@case("corruption", "bad gzip CRC (last bytes altered)", 1,
      "sub-01 fails at intake (was: accepted, the CRC was never checked); sub-02 runs",
      "CRC check failed")
def bad_gzip_crc(tmp: Path) -> Scenario:
    root = _pair(tmp)
    raw = bytearray((root / T1).read_bytes())
    raw[-8] ^= 0xFF
    (root / T1).write_bytes(bytes(raw))
    return _fails(root, T1, "re-copy or re-export")


@case("corruption", "one flipped bit inside the compressed voxels", 1,
      "sub-01 fails at intake (was: accepted with silently wrong voxels); sub-02 runs",
      "the file is truncated or corrupt")
def flipped_bit_in_gzip(tmp: Path) -> Scenario:
    root = _pair(tmp)
    write_image(root / PET, blob((30, 30, 30)) + 1)
    raw = bytearray((root / PET).read_bytes())
    raw[len(raw) // 2] ^= 0x10
    (root / PET).write_bytes(bytes(raw))
    return _fails(root, PET, "re-copy or re-export")


@case("corruption", "truncated uncompressed .nii", 1, "sub-01 fails at intake; sub-02 runs",
      "the file is truncated or corrupt")
def truncated_nii(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / T1).unlink()
    t1 = write_image(root / "sub-01/anat/sub-01_T1w.nii", blob((40, 40, 40)) + 1)
    _truncate(t1)
    return _fails(root, "sub-01/anat/sub-01_T1w.nii", "re-copy or re-export")


@case("corruption", "real HTML page saved as sub-01_..._pet.nii.gz (bids-examples pet002)", 0,
      "sub-01 skipped at pre-flight naming the file; sub-02 runs",
      "is an HTML/XML page, not an image")
def html_as_niigz(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / PET).write_bytes(html_page())
    return _skipped(root, PET, "download the file itself again")


@case("corruption", "real HTML page saved as sub-01_T1w.nii", 0,
      "sub-01 skipped at pre-flight naming the file; sub-02 runs",
      "is an HTML/XML page, not an image")
def html_as_nii(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / T1).unlink()
    (root / "sub-01/anat/sub-01_T1w.nii").write_bytes(html_page())
    return _skipped(root, "sub-01/anat/sub-01_T1w.nii", "download the file itself again")


@case("corruption", "zero-byte T1w", 66, "skipped at pre-flight; nobody left: refused",
      "is empty (0 bytes)")
def zero_byte(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / T1).write_bytes(b"")
    return Scenario(root, file=T1, fix="replace it with the real image")


@case("corruption", "real 1-byte placeholder PET (bids-examples pet006, FDG phantom) with a "
      "synthetic T1w", 66, "skipped at pre-flight; refused", "is not gzip-compressed")
def one_byte_placeholder(tmp: Path) -> Scenario:
    root = real("pet006", tmp)
    write_image(root / T1, blob())
    return Scenario(root, file="sub-01/pet/sub-01_pet.nii.gz", fix="replace it with the real")


@case("corruption", "real PET-only dataset (pet006: no T1w at all)", 66,
      "skipped; refused with what each participant needs", "no participant has the inputs")
def pet006_pet_only(tmp: Path) -> Scenario:
    return Scenario(real("pet006", tmp), file="pet006", fix="each participant needs a T1w")


@case("corruption", "git-annex pointer file in place of the PET (unlocked annex, not fetched)",
      0, "sub-01 skipped at pre-flight; sub-02 runs", "is a git-annex pointer file")
def git_annex_pointer(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / PET).write_text("/annex/objects/MD5E-s1234--0123456789abcdef.nii.gz\n")
    return _skipped(root, PET, "datalad get")


@case("corruption", "Git LFS pointer in place of the T1w", 0,
      "sub-01 skipped at pre-flight; sub-02 runs", "is a Git LFS pointer")
def git_lfs_pointer(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / T1).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"
                           "size 123\n")
    return _skipped(root, T1, "git lfs pull")


@case("corruption", "uncompressed NIfTI named .nii.gz", 0,
      "sub-01 skipped at pre-flight with the rename fix; sub-02 runs",
      "is an uncompressed NIfTI although its name ends in .gz")
def uncompressed_named_niigz(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / PET).write_bytes(gzip.decompress((root / PET).read_bytes()))
    return _skipped(root, PET, "rename it to .nii")


@case("corruption", "invalid JSON in the PET sidecar", 0,
      "sub-01 skipped at pre-flight naming the sidecar; sub-02 runs", "invalid JSON sidecar")
def invalid_json_sidecar(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / PET_JSON).write_text('{"TracerName": "FDG",}')
    return _skipped(root, PET_JSON, "fix the JSON syntax")


@case("corruption", "PET sidecar holding a JSON list", 0,
      "sub-01 skipped naming the sidecar (was: crashed with a traceback); sub-02 runs",
      "not an object of metadata fields")
def sidecar_not_an_object(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / PET_JSON).write_text('["FDG", 300]')
    return _skipped(root, PET_JSON, "one JSON object")


@case("corruption", "PET sidecar that is not UTF-8 (Latin-1 bytes)", 0,
      "sub-01 skipped naming the sidecar (was: crashed with a traceback); sub-02 runs",
      "invalid JSON sidecar")
def sidecar_not_utf8(tmp: Path) -> Scenario:
    root = _pair(tmp)
    (root / PET_JSON).write_bytes('{"TracerName": "FDG", "Note": "étude"}'.encode("latin-1"))
    return _skipped(root, PET_JSON, "UTF-8 text")



@case("corruption", "JSON files starting with a UTF-8 byte-order mark (Windows editors)", 0,
      "runs: the mark is ignored (was: the sidecar was refused as invalid JSON)")
def json_with_bom(tmp: Path) -> Scenario:
    root = dataset(tmp)
    for rel in ("dataset_description.json", PET_JSON):
        (root / rel).write_bytes(b"\xef\xbb\xbf" + (root / rel).read_bytes())
    return Scenario(root, ran={"sub-01"})
