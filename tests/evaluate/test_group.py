import math

import pandas as pd
import pytest

from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.errors import InputError
from pseudopet_bids.evaluate.group import aggregate, wilson_interval


def test_wilson_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def _table(path, regions):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"cluster_id": range(1, len(regions) + 1), "region": regions,
                  "volume_mm3": [2000.0] * len(regions)}).to_csv(path, sep="\t", index=False)


def test_aggregate(tmp_path):
    _table(tmp_path / "sub-P1/pet/sub-P1_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv",
           ["left-temporal", "right-frontal"])
    _table(tmp_path / "sub-P2/pet/sub-P2_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv",
           ["left-parietal", "right-occipital"])
    _table(tmp_path / "sub-P3/pet/sub-P3_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv", [])
    _table(tmp_path / "sub-C1/pet/sub-C1_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv",
           ["other"])
    parts = {"P1": Participant("P1", "patient", ("left-temporal",)),
             "P2": Participant("P2", "patient", ("right-occipital",)),
             "P3": Participant("P3", "patient", ("left-frontal",)),
             "C1": Participant("C1", "control")}
    summary = aggregate(tmp_path, parts).set_index("measure")
    assert summary.loc["detection_rate", "value"] == pytest.approx(2 / 3)
    assert summary.loc["localization_accuracy_largest", "value"] == pytest.approx(1 / 2)
    assert summary.loc["localization_accuracy_any", "value"] == pytest.approx(1.0)
    assert summary.loc["false_clusters_per_control", "value"] == 1
    assert (tmp_path / "group/subjects.tsv").exists()


def test_aggregate_nothing(tmp_path):
    with pytest.raises(InputError, match="run the participant level first"):
        aggregate(tmp_path, {})


def test_several_analyses_are_summarized_side_by_side(tmp_path):
    base = "sub-{s}/pet/sub-{s}_trc-FDG_space-T1w_desc-{a}Focus_clusters.tsv"
    _table(tmp_path / base.format(s="P1", a="cyclegan"), ["left-temporal"])
    _table(tmp_path / base.format(s="P1", a="cycleganNorm"), [])
    _table(tmp_path / base.format(s="C1", a="cyclegan"), ["right-frontal", "other"])
    _table(tmp_path / base.format(s="C1", a="cycleganNorm"), [])
    parts = {"P1": Participant("P1", "patient", ("left-temporal",)),
             "C1": Participant("C1", "control")}
    summary = aggregate(tmp_path, parts)
    table = summary.set_index(["analysis", "measure"])["value"]
    assert table["cyclegan", "detection_rate"] == 1.0
    assert table["cycleganNorm", "detection_rate"] == 0.0
    assert table["cyclegan", "false_clusters_per_control"] == 2
    assert table["cycleganNorm", "false_clusters_per_control"] == 0
    assert set(summary.loc[summary["analysis"] == "cycleganNorm", "z_reference"]) == {"controls"}
    assert set(summary["model"]) == {"cyclegan"}
    lobes = pd.read_csv(tmp_path / "group" / "lobes.tsv", sep="\t")
    row = lobes[(lobes["analysis"] == "cyclegan") & (lobes["region"] == "left-temporal")].iloc[0]
    assert row["patients_with_focus"] == 1 and row["detected"] == 1 and row["localized_any"] == 1
    ctrl = lobes[(lobes["analysis"] == "cyclegan") & (lobes["region"] == "right-frontal")]
    assert ctrl["controls_with_cluster_here"].iloc[0] == 1
    assert len(lobes) == 2 * 9  # eight lobes and "other"


def test_zero_patients_zero_controls_and_unknown_focus(tmp_path):
    base = "sub-{s}/pet/sub-{s}_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv"
    _table(tmp_path / base.format(s="C1"), [])
    only_controls = aggregate(tmp_path, {"C1": Participant("C1", "control")}).set_index("measure")
    assert only_controls.loc["detection_rate", "n"] == 0
    assert math.isnan(only_controls.loc["detection_rate", "value"])
    assert only_controls.loc["false_clusters_per_control", "value"] == 0
    _table(tmp_path / base.format(s="P1"), ["left-frontal"])
    _table(tmp_path / base.format(s="P2"), ["left-frontal"])
    parts = {"P1": Participant("P1", "patient", ()),  # focus n/a
             "P2": Participant("P2", "patient", ("left-frontal",))}
    summary = aggregate(tmp_path, parts, labels=["P1", "P2"]).set_index("measure")
    assert summary.loc["detection_rate", "value"] == 1.0
    # the patient without a known focus counts for detection, not for localization
    assert summary.loc["localization_accuracy_any", "n"] == 1
    assert summary.loc["controls_with_clusters", "n"] == 0
    assert math.isnan(summary.loc["false_clusters_per_control", "value"])
    subjects = pd.read_csv(tmp_path / "group" / "subjects.tsv", sep="\t")
    assert subjects.set_index("participant_id").loc["sub-P1", "focus"] == "n/a" or \
        pd.isna(subjects.set_index("participant_id").loc["sub-P1", "focus"])
