"""PET metadata cases: tracer names, units, frame timing, decay correction, real sidecars."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tests.conftest import blob, write_image
from tests.reliability.corpus import (PET, PET_JSON, REAL, case, dataset, html_page, probed,
                                      real, sidecar)
from tests.reliability.harness import Scenario


def _untagged(tmp: Path, **meta) -> Path:
    """sub-01 whose PET has no trc- entity: the tracer comes from the sidecar only."""
    root = dataset(tmp)
    (root / PET).rename(root / "sub-01/pet/sub-01_pet.nii.gz")
    (root / PET_JSON).rename(root / "sub-01/pet/sub-01_pet.json")
    sidecar(root / "sub-01/pet/sub-01_pet.json", drop=("TracerName",), **meta)
    return root


@case("PET metadata", "TracerName missing (no trc- entity either)", 66,
      "skipped; the fix says to add TracerName or use --allow-any-tracer",
      "PET tracer is not FDG (unknown")
def tracer_missing(tmp: Path) -> Scenario:
    return Scenario(_untagged(tmp), file="sub-01/pet/sub-01_pet.nii.gz", fix='"TracerName"')


@case("PET metadata", "non-FDG tracer (TracerName DASB)", 66,
      "skipped; nobody left: refused", "PET tracer is not FDG (DASB)")
def tracer_not_fdg(tmp: Path) -> Scenario:
    root = _untagged(tmp, TracerName="DASB")
    return Scenario(root, file="sub-01/pet/sub-01_pet.nii.gz", fix="--allow-any-tracer")


@case("PET metadata", "non-FDG tracer with --allow-any-tracer", 0,
      "runs (the user opted in)")
def tracer_not_fdg_allowed(tmp: Path) -> Scenario:
    return Scenario(_untagged(tmp, TracerName="DASB"), ["--allow-any-tracer"], ran={"sub-01"})


@case("PET metadata", "TracerName '[18F]FDG'", 0, "recognised as FDG; runs")
def tracer_bracket_18f_fdg(tmp: Path) -> Scenario:
    return Scenario(_untagged(tmp, TracerName="[18F]FDG"), ran={"sub-01"})


@case("PET metadata", "TracerName 'fdg' (lower case)", 0, "recognised as FDG; runs")
def tracer_fdg_lower_case(tmp: Path) -> Scenario:
    return Scenario(_untagged(tmp, TracerName="fdg"), ran={"sub-01"})


@case("PET metadata", "TracerName 'Fludeoxyglucose (18F)' (the INN)", 0,
      "recognised as FDG; runs")
def tracer_inn_name(tmp: Path) -> Scenario:
    return Scenario(_untagged(tmp, TracerName="Fludeoxyglucose (18F)"), ran={"sub-01"})


@case("PET metadata", "TracerName '2-deoxy-2-[18F]fluoro-D-glucose'", 0,
      "recognised as FDG; runs (was: skipped as not FDG)")
def tracer_chemical_name(tmp: Path) -> Scenario:
    return Scenario(_untagged(tmp, TracerName="2-deoxy-2-[18F]fluoro-D-glucose"),
                    ran={"sub-01"})


@case("PET metadata", "TracerName '[18F]FDGal' (the galactose analogue)", 66,
      "not FDG: skipped (was: taken for FDG)", "PET tracer is not FDG ([18F]FDGal)")
def tracer_fdgal(tmp: Path) -> Scenario:
    return Scenario(_untagged(tmp, TracerName="[18F]FDGal"), file="sub-01/pet/sub-01_pet.nii.gz",
                    fix="--allow-any-tracer")


@case("PET metadata", "Units missing", 0,
      "runs; recorded as n/a, noted in the pre-flight table (intensities are normalized)",
      "PET Units missing")
def units_missing(tmp: Path) -> Scenario:
    root = dataset(tmp)
    sidecar(root / PET_JSON, drop=("Units",))
    return Scenario(root, ran={"sub-01"})


@case("PET metadata", "unusual Units ('SUV')", 0,
      "runs; units pass through to the sidecars (the GM-median normalization removes them)")
def units_unusual(tmp: Path) -> Scenario:
    root = dataset(tmp)
    sidecar(root / PET_JSON, Units="SUV")

    def verify(run) -> None:
        assert probed(run)["unit"].pet_meta["Units"] == "SUV"

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("PET metadata", "FrameDuration lists 3 frames, the image has 2", 1,
      "fails at image intake naming the PET", "2 frames but FrameDuration lists 3")
def frame_duration_length(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"frames": 2}})
    sidecar(root / PET_JSON, FrameDuration=[300.0] * 3)
    return Scenario(root, file=PET, fix="make FrameDuration", failed={"sub-01"})


@case("PET metadata", "FrameDuration with a zero entry", 1,
      "fails at image intake naming the PET", "FrameDuration has non-positive")
def frame_duration_non_positive(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"frames": 2}})
    sidecar(root / PET_JSON, FrameDuration=[300.0, 0.0])
    return Scenario(root, file=PET, fix="fix FrameDuration", failed={"sub-01"})


@case("PET metadata", "FrameTimesStart lists 3 frames, FrameDuration and the image 2", 0,
      "runs (only FrameDuration weights the frames); a warning names the sidecar",
      "FrameTimesStart lists 3 frame(s) but the image has 2")
def frame_times_start_length(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"frames": 2}})
    sidecar(root / PET_JSON, FrameTimesStart=[0.0, 300.0, 600.0])
    return Scenario(root, ran={"sub-01"}, file=PET_JSON, fix="fix FrameTimesStart")


@case("PET metadata", "FrameTimesStart not increasing", 0,
      "runs (the weighted mean does not depend on frame order); a warning names the sidecar",
      "FrameTimesStart is not increasing")
def frame_times_start_not_increasing(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"frames": 3}})
    sidecar(root / PET_JSON, FrameTimesStart=[0.0, 600.0, 300.0])
    return Scenario(root, ran={"sub-01"}, file=PET_JSON, fix="fix FrameTimesStart")


@case("PET metadata", "ImageDecayCorrected false", 0,
      "runs; noted (each frame's decay is a global scale, removed by the normalization)",
      "PET not decay-corrected")
def not_decay_corrected(tmp: Path) -> Scenario:
    root = dataset(tmp)
    sidecar(root / PET_JSON, ImageDecayCorrected=False)
    return Scenario(root, ran={"sub-01"})


@case("PET metadata", "real FDG sidecar (ds004513: 32 frames, 12 s to 300 s) on a 32-frame "
      "image", 0, "runs; all frames combined by the FrameDuration-weighted mean")
def ds004513_real_sidecar(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"pet": None}})
    meta_src = REAL / "ds004513/sub-s003/ses-closed/pet/sub-s003_ses-closed_task-rest_pet.json"
    meta = json.loads(meta_src.read_text())
    weights = np.asarray(meta["FrameDuration"], float)
    frames = np.stack([blob() * (1 + k % 5) for k in range(len(weights))], -1)
    write_image(root / "sub-01/pet/sub-01_task-rest_pet.nii.gz", frames)
    shutil.copy(meta_src, root / "sub-01/pet/sub-01_task-rest_pet.json")

    def verify(run) -> None:
        images = probed(run)["images"]
        assert images.frame_info["FramesCombined"] == 32
        want = np.tensordot(frames, weights / weights.sum(), axes=([3], [0]))
        np.testing.assert_allclose(np.asarray(images.pet.dataobj), want, rtol=1e-5)

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("PET metadata", "real sidecar listing 45 frames (pet001, CIMBI-36) on a 4-frame image",
      1, "FrameTimesStart warned at pre-flight; fails at intake: FrameDuration lists 45",
      "4 frames but FrameDuration lists 45")
def pet001_real_sidecar_45_frames(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"pet": None}})
    src = REAL / "pet001/sub-01/ses-01/pet/sub-01_ses-01_trc-CIMBI36_pet.json"
    write_image(root / "sub-01/pet/sub-01_trc-CIMBI36_pet.nii.gz",
                np.stack([blob() + k for k in range(1, 5)], -1))
    shutil.copy(src, root / "sub-01/pet/sub-01_trc-CIMBI36_pet.json")
    return Scenario(root, ["--allow-any-tracer"], file="sub-01/pet/sub-01_trc-CIMBI36_pet",
                    fix="make FrameDuration in the sidecar match", failed={"sub-01"})


@case("PET metadata", "real FDG phantom sidecar (pet006: FrameDuration 98000, i.e. ms) on a "
      "static image", 0, "runs: a single frame needs no weights")
def pet006_real_sidecar(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"pet": None}})
    write_image(root / "sub-01/pet/sub-01_pet.nii.gz", blob() + 1)
    shutil.copy(REAL / "pet006/sub-01/pet/sub-01_pet.json", root / "sub-01/pet/sub-01_pet.json")
    return Scenario(root, ran={"sub-01"})


@case("PET metadata", "real DASB dataset with sessions (pet002; its images are HTML pages)",
      66, "every session skipped as not FDG; refused", "PET tracer is not FDG (DASB)")
def pet002_real_dasb(tmp: Path) -> Scenario:
    root = real("pet002", tmp)
    for ses in ("baseline", "rescan"):
        folder = root / f"sub-01/ses-{ses}"
        (folder / f"pet/sub-01_ses-{ses}_pet.nii.gz").write_bytes(html_page())
        (folder / f"anat/sub-01_ses-{ses}_T1w.nii").write_bytes(html_page())
    return Scenario(root, file="sub-01/ses-baseline/pet/sub-01_ses-baseline_pet.nii.gz",
                    fix="--allow-any-tracer")


@case("corruption", "real images that are saved HTML pages (pet002) with --allow-any-tracer", 66,
      "skipped at pre-flight as HTML pages, naming each file; refused",
      "is an HTML/XML page, not an image")
def pet002_real_html_images(tmp: Path) -> Scenario:
    root = real("pet002", tmp)
    for ses in ("baseline", "rescan"):
        folder = root / f"sub-01/ses-{ses}"
        (folder / f"pet/sub-01_ses-{ses}_pet.nii.gz").write_bytes(html_page())
        (folder / f"anat/sub-01_ses-{ses}_T1w.nii").write_bytes(html_page())
    return Scenario(root, ["--allow-any-tracer"],
                    file="sub-01/ses-baseline/anat/sub-01_ses-baseline_T1w.nii",
                    fix="download the file itself again")


@case("values", "real all-zero 4D PET (pet001: valid header, 128x128x63x21 zeros)", 1,
      "fails at image intake: only zeros", "PET contains only zeros")
def pet001_real_zero_pet(tmp: Path) -> Scenario:
    root = real("pet001", tmp)
    write_image(root / "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz", blob())
    return Scenario(root, ["--allow-any-tracer"],
                    file="sub-01/ses-01/pet/sub-01_ses-01_trc-CIMBI36_pet.nii.gz",
                    fix="give the real image", failed={"sub-01_ses-01"})

