"""FROC curve and tier operating points on hand-made cluster tables (answers worked by hand)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.evaluate.group import (
    FROC_COLUMNS, POINT_COLUMNS, control_clusters, froc, froc_operating_points,
)


def subjects(analysis: str = "tissue") -> pd.DataFrame:
    """Two patients with a focus, one without, two controls (C2 without any cluster)."""
    rows = [("sub-P1", "patient", "left-temporal"), ("sub-P2", "patient", "right-parietal"),
            ("sub-P9", "patient", "n/a"), ("sub-C1", "control", "n/a"),
            ("sub-C2", "control", "n/a")]
    return pd.DataFrame([{"analysis": analysis, "participant_id": p, "session": "n/a",
                          "group": g, "focus": f} for p, g, f in rows])


def clusters(analysis: str = "tissue") -> pd.DataFrame:
    """z_mass and p_corrected rank the clusters the same way (larger mass = smaller p)."""
    rows = [  # participant, region, z_mass, p_corrected, tier
        ("sub-P1", "left-temporal", 100.0, 0.001, "high"),  # in focus
        ("sub-P1", "right-frontal", 50.0, 0.2, "low"),  # outside the focus: not a hit
        ("sub-P2", "right-parietal", 30.0, 0.03, "possible"),  # in focus
        ("sub-P9", "left-frontal", 500.0, 0.0001, "high"),  # no known focus: ignored
        ("sub-C1", "other", 80.0, 0.01, "possible"),
        ("sub-C1", "left-frontal", 10.0, 0.5, "low"),
    ]
    group = {"P": "patient", "C": "control"}
    return pd.DataFrame([{"analysis": analysis, "participant_id": p, "session": "n/a",
                          "group": group[p[4]], "region": r, "z_mass": m, "p_corrected": q,
                          "tier": t, "volume_mm3": 1000.0 * m} for p, r, m, q, t in rows])


def test_froc_by_hand():
    curve = froc(clusters(), subjects())
    assert list(curve.columns) == list(FROC_COLUMNS)
    # thresholds: +inf, then the in-focus patient strengths and the control strengths
    assert list(curve["threshold"]) == [math.inf, 100, 80, 30, 10]
    assert list(curve["sensitivity"]) == [0, 0.5, 0.5, 1.0, 1.0]
    assert list(curve["false_clusters"]) == [0, 0, 1, 1, 2]
    # C2 has no cluster but is one of the two controls
    assert list(curve["false_clusters_per_control"]) == [0, 0, 0.5, 0.5, 1.0]
    assert set(curve["n_patients"]) == {2} and set(curve["n_controls"]) == {2}
    assert set(curve["direction"]) == {">="} and set(curve["score"]) == {"z_mass"}
    # +inf and 80 are stricter than 100 and 30 for as many false clusters: off the curve
    assert list(curve["on_curve"]) == [False, True, False, True, True]


def test_froc_bootstrap_band():
    curve = froc(clusters(), subjects(), n_boot=400, seed=3)
    on = curve[curve["on_curve"]]
    low, high = on["sensitivity_ci95_low"], on["sensitivity_ci95_high"]
    assert (low <= on["sensitivity"]).all() and (on["sensitivity"] <= high).all()
    # the band is the curve's, once per false-cluster rate
    assert curve.loc[~curve["on_curve"], "sensitivity_ci95_low"].isna().all()
    # at 0 false clusters a replicate's sensitivity is 0 (C1 drawn, P1 not: 3/16), 0.5 or 1
    # (C1 not drawn: 1/4): the 2.5 % and 97.5 % points are 0 and 1
    assert (low.iloc[0], high.iloc[0]) == (0.0, 1.0)
    # with 2 false clusters allowed every replicate keeps both patients' hits
    assert (low.iloc[-1], high.iloc[-1]) == (1.0, 1.0)
    again = froc(clusters(), subjects(), n_boot=400, seed=3)
    pd.testing.assert_frame_equal(curve, again)
    none = froc(clusters(), subjects(), n_boot=0)
    assert none["sensitivity_ci95_low"].isna().all()
    assert list(none["sensitivity"]) == list(curve["sensitivity"])


def test_froc_band_narrows_with_more_subjects():
    """Copies of the same patients and controls: the band must tighten around the estimate."""
    subj, clus = subjects(), clusters()
    many_s, many_c = [], []
    for k in range(20):
        many_s.append(subj.assign(participant_id=subj["participant_id"] + f"x{k}"))
        many_c.append(clus.assign(participant_id=clus["participant_id"] + f"x{k}"))
    big = froc(pd.concat(many_c), pd.concat(many_s), n_boot=300)
    small = froc(clus, subj, n_boot=300)
    width = lambda c: (c["sensitivity_ci95_high"] - c["sensitivity_ci95_low"]).mean()  # noqa: E731
    assert width(big) < width(small) / 2
    on = big[big["on_curve"]]
    assert (on["sensitivity_ci95_low"] <= on["sensitivity"]).all()
    assert (on["sensitivity"] <= on["sensitivity_ci95_high"]).all()


def test_froc_band_missed_patients_and_ties():
    """A missed patient never counts, and a control cluster as strong as a lesion's comes
    with it (ties are kept together)."""
    subj = subjects()[lambda s: s["participant_id"].isin(["sub-P1", "sub-P2", "sub-C2"])]
    clus = clusters()[lambda c: c["participant_id"] == "sub-P1"]
    curve = froc(clus, subj, n_boot=400)
    assert list(curve["sensitivity"]) == [0, 0.5]  # P2's cluster is missing: a miss
    assert list(curve["false_clusters"]) == [0, 0]
    # no control cluster in any replicate: the sensitivity is the share of P1 drawn
    assert list(curve["on_curve"]) == [False, True]
    assert curve["sensitivity_ci95_low"].iloc[1] == 0
    assert curve["sensitivity_ci95_high"].iloc[1] == 1
    tie = pd.concat([clus, clusters()[lambda c: c["participant_id"] == "sub-C1"].assign(
        z_mass=100.0)])
    curve = froc(tie, subjects(), n_boot=50)
    assert list(curve["threshold"]) == [math.inf, 100]
    assert list(curve["false_clusters"]) == [0, 2]  # both of C1's clusters tie with P1's
    assert list(curve["sensitivity"]) == [0, 0.5]


def test_froc_p_corrected_smaller_is_stronger():
    curve = froc(clusters(), subjects(), score="p_corrected", n_boot=50)
    assert set(curve["direction"]) == {"<="}
    assert list(curve["threshold"]) == [-math.inf, 0.001, 0.01, 0.03, 0.5]
    # the same ranking as the cluster mass gives the same curve
    by_mass = froc(clusters(), subjects(), n_boot=50)
    assert list(curve["sensitivity"]) == list(by_mass["sensitivity"])
    assert list(curve["false_clusters_per_control"]) == \
        list(by_mass["false_clusters_per_control"])
    # read the wrong way round, p = 0.5 alone (a control's) would come first
    assert curve.loc[1, "sensitivity"] == 0.5 and curve.loc[1, "false_clusters"] == 0


def test_froc_without_score_column(caplog):
    old = clusters("cyclegan").drop(columns=["z_mass"])
    both = pd.concat([clusters("tissue"), old], ignore_index=True)  # cyclegan rows: NaN
    subj = pd.concat([subjects("tissue"), subjects("cyclegan")], ignore_index=True)
    with caplog.at_level("INFO", logger="pseudopet_bids.evaluate.group"):
        curve = froc(both, subj)
        alone = froc(old, subjects("cyclegan"))
    assert set(curve["analysis"]) == {"tissue"}
    assert alone.empty and list(alone.columns) == list(FROC_COLUMNS)
    assert "FROC of cyclegan skipped" in caplog.text
    with pytest.raises(ValueError, match="unknown cluster score"):
        froc(clusters(), subjects(), score="nonsense")


def test_froc_without_clusters_or_denominators():
    # no cluster at all: one point, nothing found and nothing false
    curve = froc(pd.DataFrame(), subjects())
    assert len(curve) == 1 and curve["sensitivity"].iloc[0] == 0
    assert curve["false_clusters_per_control"].iloc[0] == 0
    # no controls: no false-cluster rate, no curve
    only_patients = subjects()[lambda s: s["group"] == "patient"]
    assert froc(clusters(), only_patients).empty


def test_operating_points_by_hand():
    table = froc_operating_points(clusters(), subjects())
    assert list(table.columns) == list(POINT_COLUMNS) and len(table) == 2
    points = table.set_index("rule")
    # high: P1's temporal cluster; no control cluster is high
    assert points.loc["high", "sensitivity"] == 0.5
    assert points.loc["high", "false_clusters_per_control"] == 0
    # high or possible: P2's parietal cluster too, and C1's "other" cluster
    assert points.loc["high+possible", "sensitivity"] == 1.0
    assert points.loc["high+possible", "false_clusters"] == 1
    assert points.loc["high+possible", "false_clusters_per_control"] == 0.5
    assert 0 < points.loc["high", "sensitivity_ci95_low"] < 0.5
    no_tier = clusters().drop(columns=["tier"])
    assert froc_operating_points(no_tier, subjects()).empty


def test_control_clusters_reads_old_column_names():
    old = clusters().assign(peak_template_x=[1.0, 2, 3, 4, 5, 6]).drop(columns=["tier"])
    table = control_clusters(old)
    assert list(table["participant_id"]) == ["sub-C1", "sub-C1"]
    assert list(table["peak_template_x_mm"]) == [5.0, 6.0]
    assert table["tier"].isna().all() and table["peak_template_y_mm"].isna().all()
    assert control_clusters(pd.DataFrame()).empty
    assert np.isfinite(table["volume_mm3"]).all()
