"""Array-level pieces of the simulator: grids, head layers, FDG pattern, frames."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids import resources
from pseudopet_bids.simulate import phantom
from pseudopet_bids.simulate.geometry import (Grid, apply_affine, compose_affine, oriented_grid,
                                              pull)


@pytest.fixture(scope="module")
def head() -> phantom.HeadModel:
    return phantom.head_model(2.0)


@pytest.mark.parametrize("code", ["RAS", "LAS", "LPS", "PIL"])
def test_oriented_grid_orientation_and_centre(code):
    grid = oriented_grid((200, 220, 180), 2.0, code, (5.0, -10.0, 3.0))
    assert "".join(nib.aff2axcodes(grid.affine)) == code
    centre = grid.to_world(((np.array(grid.shape) - 1) / 2)[None])[0]
    assert np.allclose(centre, (5.0, -10.0, 3.0))
    extent = np.abs(grid.affine[:3, :3] @ np.array(grid.shape))
    assert np.allclose(sorted(extent), sorted((200, 220, 180)))


def test_pull_reproduces_an_affine_resampling():
    rng = np.random.default_rng(0)
    src = Grid((30, 32, 28), np.diag([2.0, 2.0, 2.0, 1.0]))
    vol = rng.random((1, *src.shape)).astype(np.float32)
    target = Grid((10, 10, 10), compose_affine([0, 0, 0], [2, 2, 2], [10, 12, 8]))
    out = pull(vol, src, target, lambda x: x)  # target voxel i sits on source voxel i + (5, 6, 4)
    assert np.allclose(out[0], vol[0, 5:15, 6:16, 4:14], atol=1e-5)


def test_head_has_csf_skull_and_scalp(head):
    anatomy = phantom.draw_anatomy(np.random.default_rng(0))
    t1 = phantom.t1_template(head, anatomy)
    level = head.fine
    depth = level.cavity_depth
    brain = (level.gm + level.wm) > 0.5
    inside_head = level.skin_depth > 0.5
    skull_end = phantom.CAVITY_MARGIN_MM + anatomy.skull_mm
    fat = (level.skin_depth >= 3.0) & (level.skin_depth <= 1.0 + anatomy.fat_mm)
    scalp_region = fat & (depth > skull_end + 1.0)
    skull_region = (depth > 3.0) & (depth < 4.0)
    assert (t1[~brain & inside_head] > 0).mean() > 0.99          # not a bare brain
    assert np.median(t1[scalp_region]) > 0.9                     # bright scalp fat
    assert np.median(t1[skull_region]) < 0.35                    # dark skull
    gm_val = np.median(t1[level.gm > 0.9])
    wm_val = np.median(t1[level.wm > 0.9])
    csf_val = np.median(t1[(depth < 0) & (level.gm + level.wm < 0.05)])
    assert wm_val > gm_val > csf_val                             # T1 contrast
    assert t1[level.skin_depth == 0].max() == 0.0                # air


def test_fdg_regional_pattern(head):
    anatomy = phantom.draw_anatomy(np.random.default_rng(0))
    pet = phantom.psf(phantom.pet_template(head, anatomy, 14000.0, 0.35), head.coarse.grid)
    gm = head.coarse.gm >= 0.5
    cortex = gm & (head.lobes >= 1) & (head.lobes <= 8)
    taff = resources.load_template("mask").affine

    def ratio(kind: str, in_gm: bool = True) -> float:
        grp = phantom._onto(resources.aal_group_mask(kind).astype(np.float32), taff,
                            head.coarse.grid) > 0.5
        sel = grp & gm if in_gm else grp
        return float(pet[sel].mean() / pet[cortex].mean())

    assert ratio("deep_gm") > 1.1
    assert ratio("occipital") > 1.05
    assert ratio("mesial_temporal") < 0.95
    assert ratio("cerebellum") < 0.95
    assert 8e3 < pet[cortex].mean() < 15e3
    assert pet[head.coarse.wm > 0.95].mean() < 0.7 * pet[cortex].mean()


def test_lesion_weight_stays_in_its_lobe(head):
    rng = np.random.default_rng(3)
    for region in resources.REGIONS:
        lesion = phantom.draw_lesion(rng, head, region)
        assert 12 * 0.8 - 1e-9 <= min(lesion.semi_axes_mm) and max(lesion.semi_axes_mm) <= 24
        w = phantom.lesion_weight(head.coarse, lesion)
        label = resources.LOBE_INDEX[region]
        assert w.max() > 0.99
        assert np.all(head.coarse.territory[w > 0] == label)
        core = (w >= 0.5) & (head.coarse.gm >= 0.5)
        assert core.sum() * 8.0 > 1000  # mm³ of lesioned grey matter
        # sharpened GM reaches past the atlas's cortex edge (label 0); no other lobe is hit
        in_atlas = head.lobes[core] > 0
        assert in_atlas.mean() > 0.6
        assert (head.lobes[core][in_atlas] == label).mean() > 0.9


def test_make_frames_weighted_mean_is_exact():
    rng = np.random.default_rng(1)
    static = (rng.random((6, 7, 8)) * 1e4).astype(np.float32)
    durations = np.array([120.0, 180.0, 300.0])
    frames = phantom.make_frames(static, durations, rng)
    assert frames.shape == (6, 7, 8, 3)
    mean = (frames.astype(np.float64) * durations).sum(-1) / durations.sum()
    assert np.allclose(mean, static, rtol=1e-5)
    assert not np.allclose(frames[..., 0], frames[..., 2])
    assert phantom.make_frames(static, np.array([600.0]), rng).shape == (6, 7, 8, 1)


def test_warp_to_template_is_near_the_affine(head):
    from pseudopet_bids.simulate.geometry import SubjectWarp, random_displacement

    rng = np.random.default_rng(5)
    coeffs, lattice = random_displacement(rng, phantom.MODEL_BOUNDS, 3.0)
    to_mr = compose_affine([3, -2, 4], [1.05, 0.97, 1.0], [4, -6, 2])
    warp = SubjectWarp(to_mr, coeffs, lattice)
    pts = rng.uniform(-60, 60, (500, 3))
    y = warp.to_template(pts)
    y0 = apply_affine(np.linalg.inv(to_mr), pts)
    shift = np.linalg.norm(y - y0, axis=1)
    assert 0.3 < shift.max() <= 3.0 + 1e-6
