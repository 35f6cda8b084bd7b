"""The interactive viewer in headless Chromium (software WebGL2), from ``file://``: the canvas
shows an image, the console stays clean, a click on a cluster row moves the crosshair to the
cluster's peak. Skipped without Chromium (``apt-get install chromium``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.io import files
from pseudopet_bids.reports.html import check_links
from pseudopet_bids.reports.screenshot import find_chromium
from pseudopet_bids.reports.subject import write_subject_report
from tests.reports.cdp import Browser
from tests.reports.test_subject_report import AFFINE, build_output, volumes

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_chromium() is None,
                                 reason="no chromium, chromium-browser or google-chrome on PATH "
                                        "(Debian: apt-get install -y chromium)")]

#: two clusters with distinct peaks (T1w mm, voxel centres of the 4 mm test grid)
PEAKS = [(-30.0, -10.0, 2.0), (14.0, 26.0, 12.0)]


def _output(root: Path) -> Path:
    build_output(root, figures=True, layout={"01": (None, {"tissue": ["left-temporal",
                                                                      "right-frontal"]})})
    paths = der.SubjectPaths(root, "01", None, Path("sub-01_trc-FDG_pet.nii.gz"))
    _, mask, gm, _, _ = volumes()
    z = np.where(gm > 0.3, -0.5, 0).astype(np.float32)
    inv = np.linalg.inv(AFFINE)
    for k, peak in enumerate(PEAKS):
        i, j, l = np.rint(inv @ (*peak, 1.0))[:3].astype(int)
        z[i - 2:i + 3, j - 2:j + 3, l - 2:l + 3] = -2.0 - 2 * (k == 0)
        z[i, j, l] = -5.0 + k
    files.write_nifti(paths.zmap("tissue"), z * mask, AFFINE)
    table = pd.read_csv(paths.clusters("tissue"), sep="\t")
    for col, axis in zip(("peak_x_mm", "peak_y_mm", "peak_z_mm"), range(3)):
        table[col] = [p[axis] for p in PEAKS]
    files.write_tsv(paths.clusters("tissue"), table)
    return write_subject_report(root, "01")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    return _output(tmp_path_factory.mktemp("viewer"))


def test_viewer_renders_and_cluster_rows_move_the_crosshair(page, tmp_path):
    from PIL import Image

    assert check_links(page) == []
    text = page.read_text(encoding="utf-8")
    assert text.count('class="pp-viewer"') == 1 and text.count("data-peak=") == 2
    with Browser(find_chromium() or "", width=1300, height=1000) as browser:
        browser.open(page.as_uri())
        state = browser.wait_for("document.readyState === 'complete' && "
                                 "document.querySelector('.pp-viewer').dataset.ready", 120)
        webgl2 = browser.evaluate("!!document.createElement('canvas').getContext('webgl2')")
        if not webgl2:
            # the fallback must then be shown instead (and no error)
            assert browser.evaluate("!document.querySelector('.pp-fallback').hidden")
            pytest.skip("this Chromium has no (software) WebGL2; the fallback was shown")
        assert state == "1", browser.errors
        # the canvas is not blank: a clip of it has many colours and real contrast
        rect = browser.evaluate("(() => { const c = document.querySelector('.pp-canvas');"
                                "c.scrollIntoView(); const r = c.getBoundingClientRect();"
                                "return [r.left + scrollX, r.top + scrollY, r.width, r.height];"
                                "})()")
        shot = browser.screenshot(tmp_path / "canvas.png", dict(x=rect[0], y=rect[1],
                                                               width=rect[2], height=rect[3]))
        with Image.open(io.BytesIO(shot.read_bytes())) as im:
            arr = np.asarray(im.convert("RGB")).astype(float)
        assert arr.shape[0] > 200 and arr.shape[1] > 300
        assert arr.std() > 10, "the viewer's canvas is blank"
        assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 100
        # the Z overlay (dark red to yellow) is drawn on the clusters only, the T1w (grey)
        # around it (the bottom 40 px hold the Z colour bar)
        slices = arr[:-40]
        warm = ((slices[..., 0] - slices[..., 2]) > 80) & (slices[..., 0] > 150)
        grey = (np.ptp(slices, axis=-1) < 12) & (slices.mean(axis=-1) > 60)
        assert 20 < warm.sum() < 0.1 * warm.size, f"Z overlay on {warm.mean():.1%} of the canvas"
        assert grey.sum() > 2 * warm.sum(), "the T1w is hidden"
        # a click on the second cluster's row moves the crosshair to its peak
        before = browser.evaluate("Object.values(ppViewers)[0].position()")
        assert np.allclose(before, PEAKS[0], atol=2.5), before  # starts at the top cluster
        xy = browser.evaluate("(() => { const tr = document.querySelectorAll("
                              "'tr[data-peak]')[1]; tr.scrollIntoView({block: 'center'});"
                              "const r = tr.getBoundingClientRect();"
                              "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        browser.click(*xy)
        browser.wait_for("document.querySelectorAll('tr[data-peak]')[1]"
                         ".classList.contains('pp-active')", 20)
        after = browser.evaluate("Object.values(ppViewers)[0].position()")
        assert np.allclose(after, PEAKS[1], atol=2.5), after
        shown = browser.evaluate("document.querySelector('.pp-pos').dataset.mm")
        assert np.allclose([float(v) for v in shown.split(",")], after, atol=0.01)
        # the convention toggle switches NiiVue's display
        browser.evaluate("document.querySelector('.pp-radio').click()")
        assert browser.evaluate("Object.values(ppViewers)[0].nv.opts"
                                ".isRadiologicalConvention") is False
        assert browser.errors == [], browser.errors
        # nothing but the page, its local figures and in-page data was requested
        remote = [u for u in browser.requests if not u.startswith(("file:", "data:", "blob:"))]
        assert browser.requests and remote == [], remote


def test_viewer_falls_back_to_the_static_figures_without_webgl(page):
    with Browser(find_chromium() or "", extra_flags=("--disable-webgl", "--disable-webgl2"),
                 timeout=60) as browser:
        browser.open(page.as_uri())
        browser.wait_for("document.readyState === 'complete'", 60)
        assert browser.evaluate("!!document.createElement('canvas').getContext('webgl2')") \
            is False
        assert browser.evaluate("!document.querySelector('.pp-fallback').hidden")
        assert browser.evaluate("document.querySelector('.pp-viewer')"
                                ".classList.contains('pp-nowebgl')")
        assert browser.evaluate("document.querySelectorAll('.pp-fallback img').length") >= 1
        assert "WebGL2" in browser.evaluate("document.querySelector('.pp-status').textContent")
        assert browser.errors == [], browser.errors
        # nothing but the page, its local figures and in-page data was requested
        remote = [u for u in browser.requests if not u.startswith(("file:", "data:", "blob:"))]
        assert browser.requests and remote == [], remote
