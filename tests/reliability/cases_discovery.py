"""Discovery cases: which T1w and PET each participant gets, or why it is skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import blob, write_image
from tests.reliability.corpus import PET, PET_JSON, T1, case, chose, dataset, probed, sidecar
from tests.reliability.harness import Scenario


@case("discovery", "no T1w", 66, "skipped at pre-flight; nobody left: refused",
      "no T1w image")
def no_t1w(tmp: Path) -> Scenario:
    return Scenario(dataset(tmp, {"01": {"t1w": False}}), file="sub-01/anat/",
                    fix="add the T1w")


@case("discovery", "no PET", 66, "skipped at pre-flight; nobody left: refused", "no PET image")
def no_pet(tmp: Path) -> Scenario:
    return Scenario(dataset(tmp, {"01": {"pet": None}}), file="sub-01/pet/", fix="add the PET")


@case("discovery", "one participant without T1w, one complete", 0,
      "the incomplete one is skipped with the reason, the other runs", "no T1w image")
def no_t1w_others_run(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {}, "02": {"t1w": False}})
    return Scenario(root, ran={"sub-01"}, file="sub-02/anat/", fix="--participant-label")


@case("discovery", "PET and T1w in different sessions (ses-mri: anat, ses-pet: pet)", 0,
      "ses-pet runs with the T1w of ses-mri (logged); ses-mri is skipped (no PET)",
      "T1w taken from another session")
def pet_and_t1w_in_different_sessions(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"sessions": ["mri", "pet"]}})
    shutil.rmtree(root / "sub-01/ses-mri/pet")
    shutil.rmtree(root / "sub-01/ses-pet/anat")
    return Scenario(root, ran={"sub-01_ses-pet"}, file="sub-01/ses-mri/pet/",
                    verify=chose("sub-01_ses-pet", t1w="sub-01_ses-mri_T1w.nii.gz"))


@case("discovery", "session PET with a session-less T1w (sub-01/anat)", 0,
      "runs with the session-less T1w", "T1w taken from another session")
def t1w_without_session(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"sessions": ["a"]}})
    shutil.rmtree(root / "sub-01/ses-a/anat")
    write_image(root / T1, blob())
    return Scenario(root, ran={"sub-01_ses-a"}, verify=chose("sub-01_ses-a",
                                                            t1w="sub-01_T1w.nii.gz"))


def _add_t1(root: Path, name: str) -> None:
    write_image(root / "sub-01/anat" / name, blob() + 1)


@case("discovery", "several T1w: run-1, run-2 and a contrast-enhanced run-3", 0,
      "run-2 chosen (no ce-, then highest run), logged", "3 T1w images, chose sub-01_run-2")
def several_t1w_runs(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / T1).unlink()
    for name in ("sub-01_run-1_T1w.nii.gz", "sub-01_run-2_T1w.nii.gz",
                 "sub-01_ce-gad_run-3_T1w.nii.gz"):
        _add_t1(root, name)
    return Scenario(root, ran={"sub-01"}, verify=chose("sub-01", t1w="sub-01_run-2_T1w.nii.gz"))


@case("discovery", "several FDG PET runs (run-1, run-2)", 0,
      "run-1 chosen (lowest run), logged", "2 FDG PET images, chose sub-01_trc-FDG_run-1")
def several_pet_runs(tmp: Path) -> Scenario:
    root = dataset(tmp)
    for run in (1, 2):
        dst = root / f"sub-01/pet/sub-01_trc-FDG_run-{run}_pet"
        shutil.copy(root / PET, dst.with_suffix(".nii.gz"))
        shutil.copy(root / PET_JSON, dst.with_suffix(".json"))
    (root / PET).unlink()
    (root / PET_JSON).unlink()
    return Scenario(root, ran={"sub-01"},
                    verify=chose("sub-01", pet="sub-01_trc-FDG_run-1_pet.nii.gz"))


@case("discovery", "two tracers (trc-DASB run-1, trc-FDG run-2) with --allow-any-tracer", 0,
      "FDG still chosen over the lower-run DASB (was: DASB, by run number)")
def several_tracers(tmp: Path) -> Scenario:
    root = dataset(tmp)
    pet_dir = root / "sub-01/pet"
    for tracer, run in (("DASB", 1), ("FDG", 2)):
        stem = pet_dir / f"sub-01_trc-{tracer}_run-{run}_pet"
        shutil.copy(root / PET, stem.with_suffix(".nii.gz"))
        sidecar(stem.with_suffix(".json"), TracerName=tracer, FrameDuration=[300.0])
    (root / PET).unlink()
    (root / PET_JSON).unlink()
    return Scenario(root, ["--allow-any-tracer"], ran={"sub-01"},
                    verify=chose("sub-01", pet="sub-01_trc-FDG_run-2_pet.nii.gz"))


@case("discovery", "the same T1w as .nii and .nii.gz", 0,
      "one is chosen by name (.nii), logged", "2 T1w images, chose sub-01_T1w.nii")
def same_t1w_nii_and_niigz(tmp: Path) -> Scenario:
    root = dataset(tmp)
    write_image(root / "sub-01/anat/sub-01_T1w.nii", blob())
    return Scenario(root, ran={"sub-01"}, verify=chose("sub-01", t1w="sub-01_T1w.nii"))


@case("discovery", "mixed extensions: T1w .nii, PET .nii.gz", 0, "runs")
def mixed_nii_niigz(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / T1).unlink()
    write_image(root / "sub-01/anat/sub-01_T1w.nii", blob())
    return Scenario(root, ran={"sub-01"}, verify=chose("sub-01", t1w="sub-01_T1w.nii"))


@case("discovery", "PET without sidecar, tracer in the name (trc-FDG)", 0,
      "runs; Units recorded as n/a (noted)", "PET Units missing")
def pet_without_sidecar(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / PET_JSON).unlink()
    return Scenario(root, ran={"sub-01"})


@case("discovery", "PET without sidecar and without trc- (sub-01_pet.nii.gz)", 66,
      "skipped: the tracer is unknown; the fix names TracerName and --allow-any-tracer",
      "no trc- entity and no TracerName")
def pet_without_sidecar_or_tracer(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / PET).rename(root / "sub-01/pet/sub-01_pet.nii.gz")
    (root / PET_JSON).unlink()
    return Scenario(root, file="sub-01/pet/sub-01_pet.nii.gz", fix='"TracerName": "FDG"')


@case("discovery", "PET sidecar without its image", 66,
      "skipped: no PET image; the warning names the orphan sidecar", "no PET image")
def sidecar_without_pet(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / PET).unlink()
    return Scenario(root, file=PET_JSON, fix="add the PET")


@case("discovery", "T1w sidecar without its image", 66,
      "skipped: no T1w image; the warning names the orphan sidecar", "no T1w image")
def sidecar_without_t1w(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / T1).unlink()
    sidecar(root / "sub-01/anat/sub-01_T1w.json", RepetitionTime=2.3)
    return Scenario(root, file="sub-01/anat/sub-01_T1w.json", fix="add the T1w")


@case("discovery", "4D PET without sidecar (no FrameDuration)", 1,
      "fails at image intake naming the PET; nothing written for it",
      "4D PET with 3 frames but no FrameDuration")
def pet_4d_without_sidecar(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"frames": 3}})
    (root / PET_JSON).unlink()
    return Scenario(root, file=PET, fix="add FrameDuration", failed={"sub-01"})


@case("discovery", "PET metadata only in a dataset-level pet.json (inheritance)", 0,
      "runs: the tracer comes from the inherited sidecar")
def sidecar_inherited_from_root(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / PET).rename(root / "sub-01/pet/sub-01_pet.nii.gz")
    (root / PET_JSON).unlink()
    sidecar(root / "pet.json", TracerName="[18F]FDG", Units="Bq/mL", FrameDuration=[300.0],
            FrameTimesStart=[0.0])

    def verify(run) -> None:
        assert probed(run)["unit"].tracer == "[18F]FDG"

    return Scenario(root, ran={"sub-01"}, verify=verify)
