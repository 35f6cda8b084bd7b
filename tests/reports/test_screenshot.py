"""Headless-Chromium screenshots of a report page (skipped without Chromium)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pseudopet_bids.reports import html as H
from pseudopet_bids.reports.screenshot import find_chromium, screenshot


def test_screenshot_errors_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr("pseudopet_bids.reports.screenshot.find_chromium", lambda: None)
    with pytest.raises(RuntimeError, match="no Chromium"):
        screenshot(tmp_path / "missing.html", tmp_path / "shot.png")


@pytest.mark.skipif(find_chromium() is None,
                    reason="no chromium, chromium-browser or google-chrome on PATH")
def test_screenshot_renders_a_page(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(np.random.default_rng(0).random((32, 32)), cmap="inferno")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(H.png_bytes(fig, dpi=60))
    body = H.section("one", "A section", H.figure_html("figures/a.png", "a figure")
                     + H.note("a note") + H.key_values({"key": "value"}))
    page = tmp_path / "page.html"
    page.write_text(H.page("Screenshot test", body, [("one", "One")]), encoding="utf-8")
    assert H.check_links(page) == []
    with pytest.raises(RuntimeError, match="no such file"):
        screenshot(tmp_path / "missing.html", tmp_path / "x.png")
    out = screenshot(page, tmp_path / "shot.png", width=800, height=700, timeout=90)
    with Image.open(io.BytesIO(out.read_bytes())) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[:2] == (700, 800)
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50, "a single-colour screenshot"
