"""The interactive viewer's embedding: quantisation round trip, NIfTI bytes, page section."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.reports import html as H
from pseudopet_bids.reports import viewer as V


def _smooth_volume(shape=(48, 56, 44), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    head = (grid ** 2).sum(axis=0) < 0.8
    return (head * (600 + 300 * np.sin(4 * grid[0]) * np.cos(3 * grid[2]))
            + rng.normal(0, 5, shape)).astype(np.float32)


def test_uint8_round_trip_within_half_a_step():
    data = _smooth_volume()
    q = V.quantise(data, "uint8")
    assert q.values.dtype == np.uint8
    err = np.abs(q.restore() - data)
    assert err.max() <= q.slope / 2 + 1e-6
    assert q.slope == pytest.approx((data.max() - data.min()) / 255)


def test_uint8_clipping_saturates_outside_the_range():
    data = np.array([[[-5.0, 0.0, 50.0, 100.0, 400.0]]])
    q = V.quantise(data, "uint8", 0.0, 100.0)
    back = q.restore().ravel()
    assert back[0] == pytest.approx(0.0) and back[-1] == pytest.approx(100.0)
    assert np.abs(back[1:4] - data.ravel()[1:4]).max() <= q.slope / 2 + 1e-9


def test_int16_keeps_zero_and_sign():
    z = np.minimum(_smooth_volume(seed=1) / 100 - 6.5, 0.0)
    q = V.quantise(z, "int16", float(z.min()), 0.0)
    assert q.inter == 0.0 and q.values.dtype == np.int16
    back = q.restore()
    assert np.all(back[z == 0] == 0) and np.all(back <= 0)
    assert np.abs(back - z).max() <= q.slope / 2 + 1e-9
    with pytest.raises(ValueError, match="unknown quantisation"):
        V.quantise(z, "float8")
    with pytest.raises(ValueError, match="empty quantisation range"):
        V.quantise(z, "uint8", 1.0, 0.0)


def test_nifti_bytes_round_trip_and_size():
    data = _smooth_volume()
    affine = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
    box = V.crop_box(data > 1, (1.0, 1.0, 1.0), margin_mm=2)
    assert all(s.stop - s.start <= n for s, n in zip(box, data.shape))
    cropped_aff = V.cropped_affine(affine, box)
    # the crop keeps every voxel's world position
    ijk = np.array([3, 4, 5, 1.0])
    full = ijk + np.array([s.start for s in box] + [0])
    assert np.allclose(cropped_aff @ ijk, affine @ full)
    q = V.quantise(data[box], "uint8")
    blob = V.nifti_gz(q, cropped_aff, "T1w")
    assert blob == V.nifti_gz(q, cropped_aff, "T1w"), "not reproducible"
    img = V.read_nifti_gz(blob)
    assert np.allclose(img.affine, cropped_aff)
    assert img.get_data_dtype() == np.uint8
    assert np.abs(img.get_fdata() - data[box]).max() <= q.slope / 2 + 1e-4
    # 8 bits and gzip: well under a quarter of the float32 volume
    assert len(blob) < data[box].nbytes / 4


def _layers():
    aff = np.eye(4)
    t1 = V.nifti_gz(V.quantise(_smooth_volume((8, 8, 8)), "uint8"), aff)
    z = V.nifti_gz(V.quantise(-np.ones((8, 8, 8)), "int16", -1.0, 0.0), aff)
    return [V.Layer("t1w", "T1w", "base", t1, 0, 1, "gray"),
            V.Layer("pet", "real PET", "pet", t1, 0, 1, "inferno"),
            V.Layer("tissueVsBaseline", "Z", "z", z, 1.65, 3, "pp_zdeficit", 1.65)]


def test_viewer_html_embeds_volumes_and_cluster_peaks(tmp_path):
    table = pd.DataFrame({"cluster_id": [1, 2], "peak_x_mm": [-40.0, 31.5],
                          "peak_y_mm": [-20.0, 5.0], "peak_z_mm": [-12.0, np.nan]})
    view = pd.DataFrame({"rank": ["1", "2"], "region": ["left-temporal", "right-frontal"]})
    rows = V.cluster_rows(table, view)
    assert rows[0].peak_mm == (-40.0, -20.0, -12.0) and rows[1].peak_mm is None
    html = V.viewer_html("viewer-x", "Viewer", _layers(), {"tissueVsBaseline": rows},
                         '<img src="figures/z.png" alt="z">')
    assert html.count('data-peak="') == 1 and 'data-peak="-40.00,-20.00,-12.00"' in html
    data = json.loads(re.search(r'class="pp-viewer-data">(.*?)</script>', html, re.S).group(1))
    assert [x["key"] for x in data["layers"]] == ["t1w", "pet", "tissueVsBaseline"]
    back = V.read_nifti_gz(base64.b64decode(data["layers"][2]["b64"]))
    assert np.allclose(back.get_fdata(), -1.0)
    with pytest.raises(ValueError, match="T1w as its first layer"):
        V.viewer_html("v", "V", _layers()[1:], {}, "")
    # the page loads nothing from the network
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "z.png").write_bytes(b"\x89PNG")
    page = tmp_path / "p.html"
    page.write_text(H.page("t", html + V.scripts_html()), encoding="utf-8")
    assert H.check_links(page) == []
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)


def test_downsample_keeps_world_positions():
    data = np.arange(6 * 4 * 5, dtype=np.float64).reshape(6, 4, 5)
    affine = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
    small, small_aff = V.downsample(data, affine, 2)
    assert small.shape == (3, 2, 2)
    assert small[1, 0, 1] == pytest.approx(data[2:4, 0:2, 2:4].mean())
    # the coarse voxel's centre is the centre of its block of fine voxels
    centre = affine @ np.array([2.5, 0.5, 2.5, 1.0])
    assert np.allclose(small_aff @ np.array([1, 0, 1, 1.0]), centre)
    assert V.downsample(data, affine, 1)[0] is data
    with pytest.raises(ValueError, match="cannot downsample"):
        V.downsample(data[:1], affine, 2)


def test_pet_viewer_from_the_output_folder(tmp_path):
    from pathlib import Path

    from pseudopet_bids.bids import derivatives as der
    from pseudopet_bids.reports.subject import cluster_view
    from tests.reports.test_subject_report import build_output

    build_output(tmp_path, figures=False, layout={"01": (None, {"tissue": ["left-temporal"]})})
    paths = der.SubjectPaths(tmp_path, "01", None, Path("sub-01_trc-FDG_pet.nii.gz"))
    table = pd.read_csv(paths.clusters("tissue"), sep="\t")
    html = V.pet_viewer(paths, ["tissue"], ["tissue"], {"tissue": (table, cluster_view(table))},
                        "<p>static figures</p>")
    assert html is not None and "<p>static figures</p>" in html
    data = json.loads(re.search(r'class="pp-viewer-data">(.*?)</script>', html, re.S).group(1))
    layers = {x["key"]: x for x in data["layers"]}
    assert list(layers) == ["t1w", "pet", "pseudo-tissue", "tissue"]
    assert layers["tissue"]["threshold"] == pytest.approx(1.65)  # from the Z sidecar
    assert 'data-peak="-30.00,-10.00,2.00"' in html
    # the deficit map holds −Z (the fake Z is −0.5 in grey matter)
    deficit = V.read_nifti_gz(base64.b64decode(layers["tissue"]["b64"])).get_fdata()
    assert deficit.min() >= 0 and deficit.max() == pytest.approx(0.5, abs=0.01)
    # the PET is averaged onto a grid of at least 2 mm (here the 4 mm grid stays)
    pet = V.read_nifti_gz(base64.b64decode(layers["pet"]["b64"]))
    assert min(pet.header.get_zooms()) >= 2.0
    unfinished = V.pet_viewer(paths, ["tissue"], ["tissue"], {}, "")
    assert unfinished is not None and "the analysis did not finish" in unfinished
    paths.pet(der.PET_OUTPUTS["preproc"]).unlink()
    assert V.pet_viewer(paths, ["tissue"], ["tissue"], {}, "") is None
