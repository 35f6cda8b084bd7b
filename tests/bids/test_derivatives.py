import gzip
import json

import nibabel as nib
import numpy as np
import pandas as pd

from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.io import files


def test_nifti_deterministic_and_atomic(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    files.write_nifti(a, data, np.eye(4))
    files.write_nifti(b, data, np.eye(4))
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes())[:4]  # valid gzip
    assert np.array_equal(nib.load(a).get_fdata(), data)
    assert not list(tmp_path.glob(".*tmp"))


def test_names(tmp_path):
    from pathlib import Path
    paths = der.SubjectPaths(tmp_path, "01", "pre", Path("sub-01_ses-pre_trc-FDG_rec-acdyn_pet.nii.gz"))
    assert paths.pet("space-T1w_desc-preproc_pet.nii.gz").name == \
        "sub-01_ses-pre_trc-FDG_rec-acdyn_space-T1w_desc-preproc_pet.nii.gz"
    assert paths.anat("desc-brain_mask.nii.gz") == \
        tmp_path / "sub-01/ses-pre/anat/sub-01_ses-pre_desc-brain_mask.nii.gz"


def test_init_output_idempotent(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    out = tmp_path / "out"
    der.init_output(out, bids)
    first = (out / "dataset_description.json").read_bytes()
    der.init_output(out, bids)
    assert (out / "dataset_description.json").read_bytes() == first
    desc = json.loads(first)
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "pseudopet"
    assert "logs\n" in (out / ".bidsignore").read_text()


def test_tsv_na(tmp_path):
    files.write_tsv(tmp_path / "t.tsv", pd.DataFrame({"a": [1.0, np.nan]}))
    assert (tmp_path / "t.tsv").read_text() == "a\n1\nn/a\n"


def test_npz_archives_are_reproducible(tmp_path):
    import time

    arrays = {"mask": np.ones((3, 4), bool), "GM": np.linspace(0, 1, 12, dtype=np.float32),
              "hash": np.array("abc")}
    first = files.npz_bytes(arrays, compress=True)
    time.sleep(2.1)  # zip dates have 2 s resolution
    assert files.npz_bytes(arrays, compress=True) == first
    (tmp_path / "a.npz").write_bytes(first)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert {k: z[k].tolist() for k in z.files} == {k: v.tolist() for k, v in arrays.items()}


def test_container_recorded_only_for_the_projects_image():
    image = {der.IMAGE_VARIABLE: "pseudopet/pseudopet:0.1.0"}
    docker = {"/.dockerenv"}.__contains__
    podman = {"/run/.containerenv", "/.dockerenv"}.__contains__
    nothing = set().__contains__
    # a pip install inside some other container (CI runner, development VM): no record
    assert der.container_record({}, docker) is None
    assert der.container_runtime({}, docker) == "docker"
    assert der.container_runtime({}, nothing) is None
    # the project's image under each runtime
    assert der.container_record(image, docker) == {"Type": "docker",
                                                   "Tag": "pseudopet/pseudopet:0.1.0"}
    assert der.container_record(image, podman)["Type"] == "podman"
    assert der.container_record({**image, "APPTAINER_CONTAINER": "/x/pp.sif"},
                                docker)["Type"] == "apptainer"
    assert der.container_record(image, nothing)["Type"] == "unknown"


def test_dataset_description_has_no_placeholder_and_the_inputs_authors(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "BIDSVersion": "1.10.0", "Authors": ["A. One", "B. Two", 3]}))
    desc = der.dataset_description(bids, {"Type": "podman", "Tag": "t"}, None,
                                   der.source_authors(bids))
    generated = desc["GeneratedBy"][0]
    assert "CodeURL" not in generated  # no public repository: no address rather than a false one
    assert generated["Container"] == {"Type": "podman", "Tag": "t"}
    assert desc["Authors"] == ["A. One", "B. Two"]
    (bids / "dataset_description.json").write_text("{not json")
    assert der.source_authors(bids) == []
    assert "Authors" not in der.dataset_description(bids, None, None, [])
    assert "Container" not in der.dataset_description(bids)["GeneratedBy"][0]


def test_init_output_writes_a_readme(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    der.init_output(tmp_path / "out", bids)
    text = (tmp_path / "out" / "README.md").read_text()
    assert text == der.README and "sub-<label>/pet/" in text
