"""FROC and false-cluster map figures from hand-made tables: valid PNGs, also when empty."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.evaluate.group import control_clusters, froc, froc_operating_points
from pseudopet_bids.reports import group_figures as G
from tests.evaluate.test_froc import clusters, subjects


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).size


@pytest.fixture(scope="module")
def tables():
    both = pd.concat([clusters("tissue"), clusters("tissueNorm").assign(
        z_mass=lambda c: c["z_mass"] * 2)], ignore_index=True)
    subj = pd.concat([subjects("tissue"), subjects("tissueNorm")], ignore_index=True)
    return both, subj


def test_froc_figure(tables):
    both, subj = tables
    curve, points = froc(both, subj), froc_operating_points(both, subj)
    width, height = png_size(G.froc_figure(curve, points))
    assert width > height > 300
    # as read back from a TSV (on_curve as text), without points, and an older froc.tsv
    png_size(G.froc_figure(curve.assign(on_curve=curve["on_curve"].astype(str)), None))
    png_size(G.froc_figure(curve.drop(columns=["on_curve"]), points.iloc[0:0]))
    png_size(G.froc_figure(curve.iloc[0:0], None))


def test_false_cluster_map_figure(tables):
    both, _ = tables
    ctrl = control_clusters(both).assign(peak_template_x_mm=[-40.0, 30, -40, 30],
                                         peak_template_y_mm=[-20.0, 10, -20, 10],
                                         peak_template_z_mm=[10.0, 40, 10, 40])
    one_row = png_size(G.false_cluster_map_figure(ctrl.iloc[0:2]))
    two_rows = png_size(G.false_cluster_map_figure(ctrl))
    assert two_rows[1] > one_row[1]  # one row of projections per analysis
    # unknown coordinates, tier and volume are drawn or counted, not an error
    ctrl.loc[0, ["peak_template_x_mm", "tier", "volume_mm3"]] = [np.nan, np.nan, np.nan]
    png_size(G.false_cluster_map_figure(ctrl))
    png_size(G.false_cluster_map_figure(ctrl.iloc[0:0]))
    image, extent = G._brain_projections()["axial"]
    assert image.any() and extent[0] < 0 < extent[1] and extent[2] < 0 < extent[3]
