
import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids.errors import ImageError
from pseudopet_bids.io.intake import combine_frames, load_image
from tests.conftest import blob, write_image


def test_load_reorients_to_ras_without_touching_file(tmp_path):
    data = blob()
    lps = np.diag([-2.0, -2.0, 2.0, 1.0])
    path = write_image(tmp_path / "t1.nii.gz", data, lps)
    before = path.read_bytes()
    img = load_image(path, "T1w")
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.get_data_dtype() == np.float32
    # same world position of voxel content: sum preserved and flips applied
    assert np.allclose(img.get_fdata(), data[::-1, ::-1, :])
    assert path.read_bytes() == before


@pytest.mark.parametrize("content,expected", [
    (b"", "empty"),
    (b"<html><body>Not found</body></html>", "cannot read"),
])
def test_unreadable_files(tmp_path, content, expected):
    path = tmp_path / "bad_T1w.nii.gz"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=expected) as info:
        load_image(path, "T1w")
    assert str(path) in str(info.value)


def test_truncated_gzip(tmp_path):
    path = write_image(tmp_path / "t1.nii.gz", blob((40, 40, 40)) + 1)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(path, "T1w")


@pytest.mark.parametrize("fill,expected", [(np.nan, "non-finite"), (0.0, "only zeros")])
def test_bad_values(tmp_path, fill, expected):
    data = np.full((8, 8, 8), fill, dtype=np.float32)
    path = write_image(tmp_path / "pet.nii.gz", data)
    with pytest.raises(ImageError, match=expected):
        load_image(path, "PET")


def test_4d_rejected_for_t1(tmp_path):
    path = write_image(tmp_path / "t1.nii.gz", np.stack([blob(), blob()], -1))
    with pytest.raises(ImageError, match="4 dimensions"):
        load_image(path, "T1w")


def test_no_qform_no_sform_refused(tmp_path):
    img = nib.Nifti1Image(blob(), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    path = tmp_path / "t1.nii"
    nib.save(img, path)
    with pytest.raises(ImageError, match="neither a valid sform nor qform"):
        load_image(path)


def test_combine_frames_weighted_mean(tmp_path):
    frames = np.stack([blob() * k for k in (1.0, 2.0, 4.0)], -1)
    path = write_image(tmp_path / "pet.nii.gz", frames)
    img = load_image(path, "PET", ndim=(3, 4))
    static, info = combine_frames(img, [60, 60, 120], path)
    assert static.shape == blob().shape
    assert np.allclose(static.get_fdata(), blob() * (60 + 120 + 480) / 240, rtol=1e-5)
    assert info["FramesCombined"] == 3


def test_combine_frames_mismatch(tmp_path):
    path = write_image(tmp_path / "pet.nii.gz", np.stack([blob(), blob()], -1))
    img = load_image(path, "PET", ndim=(3, 4))
    with pytest.raises(ImageError, match="2 frames but FrameDuration lists 3"):
        combine_frames(img, [1, 2, 3], path)
    with pytest.raises(ImageError, match="no FrameDuration"):
        combine_frames(img, None, path)
