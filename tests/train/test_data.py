"""Slice datasets and the unpaired sampler: context slices, brain slices, determinism, epochs,
data-parallel positions."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.train.data import SliceSet, UnpairedSampler, brain_slices, context_slices


def _volume(shape=(6, 5, 7)) -> np.ndarray:
    """Voxel value = 100·z + 10·x + y: every slice and position is recognisable."""
    x, y, z = np.indices(shape)
    return (100 * z + 10 * x + y).astype(np.float32)


def _slice_set(n_slices: int, context: int = 0) -> SliceSet:
    """A SliceSet whose slice ``i`` is filled with the value ``i`` (all slices hold brain)."""
    vol = np.broadcast_to(np.arange(n_slices, dtype=np.float32), (4, 3, n_slices)).copy()
    return SliceSet([vol], [np.ones(vol.shape, bool)], context)


def _sampler(n_mri: int, n_pet: int, batch: int = 3, seed: int = 7, rank: int = 0,
             world: int = 1) -> UnpairedSampler:
    return UnpairedSampler({"mri": _slice_set(n_mri), "pet": _slice_set(n_pet)},
                           batch, seed, rank, world)


# --------------------------------------------------------------------------- context_slices


@pytest.mark.parametrize("k", [0, 1, 2])
def test_context_slices_shape_and_order(k):
    vol = _volume()
    out = context_slices(vol, 3, k)
    assert out.shape == (2 * k + 1, 6, 5)
    for c in range(2 * k + 1):
        np.testing.assert_array_equal(out[c], vol[:, :, 3 - k + c])
    assert out.flags["C_CONTIGUOUS"]


def test_context_slices_replicate_edges():
    vol = _volume()
    first = context_slices(vol, 0, 2)
    np.testing.assert_array_equal(first[:, 0, 0], [0, 0, 0, 100, 200])
    last = context_slices(vol, 6, 2)
    np.testing.assert_array_equal(last[:, 0, 0], [400, 500, 600, 600, 600])
    np.testing.assert_array_equal(last[3], vol[:, :, 6])
    np.testing.assert_array_equal(context_slices(vol, 6, 0)[0], vol[:, :, 6])


def test_context_slices_is_a_copy():
    vol = _volume()
    out = context_slices(vol, 2, 1)
    out[:] = -5
    assert vol.min() >= 0


# --------------------------------------------------------------------------- brain_slices


def test_brain_slices_threshold():
    mask = np.zeros((10, 10, 5), bool)
    mask[:1, :1, 0] = True                     # 1 % of the slice
    mask[:2, :1, 1] = True                     # exactly 2 %
    mask[:3, :1, 2] = True                     # 3 %
    mask[:, :, 4] = True                       # 100 %
    np.testing.assert_array_equal(brain_slices(mask), [1, 2, 4])
    np.testing.assert_array_equal(brain_slices(mask, 0.025), [2, 4])
    np.testing.assert_array_equal(brain_slices(mask, 0.0), [0, 1, 2, 3, 4])
    assert brain_slices(np.zeros((4, 4, 3), bool)).size == 0


# --------------------------------------------------------------------------- SliceSet


def test_slice_set_index_holds_only_brain_slices(rng):
    vols, masks = [], []
    for brain in ([1, 2], [0, 3, 4]):
        vols.append(rng.normal(size=(8, 9, 5)).astype(np.float64))
        mask = np.zeros((8, 9, 5), bool)
        mask[2:6, 2:7, brain] = True
        masks.append(mask)
    s = SliceSet(vols, masks, context=1)
    assert s.index == [(0, 1), (0, 2), (1, 0), (1, 3), (1, 4)]
    assert len(s) == 5
    got = s.get(2)                              # volume 1, slice 0, neighbours replicated
    assert got.shape == (3, 8, 9) and got.dtype == np.float32
    np.testing.assert_allclose(got, context_slices(vols[1], 0, 1), rtol=1e-6)
    with pytest.raises(ValueError):
        SliceSet(vols, masks[:1])


# --------------------------------------------------------------------------- sampler


def test_sampler_batch_shapes_and_values():
    s = _sampler(5, 8, batch=3)
    b = s.batch(4)
    assert set(b) == {"mri", "pet"}
    assert b["mri"].shape == (3, 1, 4, 3) and b["mri"].dtype == np.float32
    idx = s.indices(4)
    # slice i is filled with value i: the batch holds exactly the indexed slices
    np.testing.assert_array_equal(b["mri"][:, 0, 0, 0], idx["mri"])
    np.testing.assert_array_equal(b["pet"][:, 0, 0, 0], idx["pet"])


def test_sampler_is_a_function_of_seed_and_step():
    a, b = _sampler(11, 11), _sampler(11, 11)
    for step in (0, 3, 17, 3):                 # also revisiting a step: caches change nothing
        assert a.indices(step) == b.indices(step)
        for name in ("mri", "pet"):
            np.testing.assert_array_equal(a.batch(step)[name], b.batch(step)[name])
    seq = [tuple(a.indices(step)["mri"]) for step in range(6)]
    assert len(set(seq)) > 1                    # different steps, different batches
    assert a.indices(0) != a.indices(1)
    other_seed = _sampler(11, 11, seed=8)
    assert [other_seed.indices(s)["mri"] for s in range(4)] != \
        [a.indices(s)["mri"] for s in range(4)]


def test_sampler_domains_are_independent():
    s = _sampler(12, 12, batch=4)
    mri = [i for step in range(3) for i in s.indices(step)["mri"]]
    pet = [i for step in range(3) for i in s.indices(step)["pet"]]
    assert sorted(mri) == sorted(pet) == list(range(12))
    assert mri != pet                           # equal sizes, yet independent shuffles


@pytest.mark.parametrize("n_mri,n_pet,batch", [(7, 3, 2), (5, 13, 4), (1, 4, 3)])
def test_sampler_epochs_cover_each_slice_once(n_mri, n_pet, batch):
    s = _sampler(n_mri, n_pet, batch=batch)
    steps = 3 * max(n_mri, n_pet) // batch + 2
    seq = {name: [i for step in range(steps) for i in s.indices(step)[name]]
           for name in ("mri", "pet")}
    for name, n in (("mri", n_mri), ("pet", n_pet)):
        positions = seq[name]
        assert all(0 <= i < n for i in positions)
        for epoch in range(len(positions) // n):
            block = positions[epoch * n:(epoch + 1) * n]
            assert sorted(block) == list(range(n)), (name, epoch, block)
    if n_mri > 2:                               # a fresh permutation each epoch
        assert seq["mri"][:n_mri] != seq["mri"][n_mri:2 * n_mri]


def test_sampler_ranks_split_the_global_sequence():
    batch = 3
    single = _sampler(10, 7, batch=batch)
    ranks = [_sampler(10, 7, batch=batch, rank=r, world=2) for r in (0, 1)]
    for step in range(5):
        r0, r1 = ranks[0].indices(step), ranks[1].indices(step)
        # rank r at step s takes the positions of step 2s + r of the single-process run
        assert r0 == single.indices(2 * step)
        assert r1 == single.indices(2 * step + 1)
    # together the ranks walk each epoch exactly once (positions are disjoint)
    for name, n in (("mri", 10), ("pet", 7)):
        pos = [i for step in range(5) for r in ranks for i in r.indices(step)[name]]
        assert pos == [i for step in range(10) for i in single.indices(step)[name]]
        assert sorted(pos[:n]) == list(range(n))


def test_sampler_refuses_an_empty_domain():
    empty = SliceSet([np.zeros((4, 4, 3), np.float32)], [np.zeros((4, 4, 3), bool)])
    assert len(empty) == 0
    with pytest.raises(ValueError, match="pet"):
        UnpairedSampler({"mri": _slice_set(3), "pet": empty}, 2, 0)
    with pytest.raises(ValueError, match="mri"):
        UnpairedSampler({"pet": _slice_set(3)}, 2, 0)
