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
    _table(tmp_path / "sub-P1/pet/sub-P1_trc-FDG_space-T1w_desc-focus_clusters.tsv",
           ["left-temporal", "right-frontal"])
    _table(tmp_path / "sub-P2/pet/sub-P2_trc-FDG_space-T1w_desc-focus_clusters.tsv",
           ["left-parietal", "right-occipital"])
    _table(tmp_path / "sub-P3/pet/sub-P3_trc-FDG_space-T1w_desc-focus_clusters.tsv", [])
    _table(tmp_path / "sub-C1/pet/sub-C1_trc-FDG_space-T1w_desc-focus_clusters.tsv",
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
