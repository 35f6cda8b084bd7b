"""Group report from the real group tables of a small fake output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.io import files
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.evaluate.group import aggregate
from pseudopet_bids.reports.group import comparison_table, write_group_report
from pseudopet_bids.reports.html import check_links
from pseudopet_bids.reports.subject import write_subject_report
from tests.reports.test_subject_report import build_output

#: subject -> (session, {analysis: regions}): patients 01 and 03, control 02 (with a session)
LAYOUT = {
    "01": (None, {"tissue": ["left-temporal", "left-frontal"], "tissueNorm": ["left-temporal"]}),
    "02": ("1", {"tissue": ["right-occipital"], "tissueNorm": []}),
    "03": (None, {"tissue": [], "tissueNorm": ["right-parietal"]}),
}
PEOPLE = {"01": Participant("01", "patient", ("left-temporal",)),
          "02": Participant("02", "control"),
          "03": Participant("03", "patient", ("right-parietal",))}


def translation_tables(root: Path) -> None:
    rng = np.random.default_rng(0)
    rows, summary, spectra = [], [], []
    for model in ("tissue", "cyclegan"):
        for i in range(3):
            rows.append({"model": model, "participant_id": f"sub-C{i}", "session": "n/a",
                         **{m: rng.uniform(0.5, 0.9) for m in (
                             "ssim_brain", "psnr_brain", "rmse_brain", "mae_brain",
                             "ssim_image", "psnr_image", "rmse_image", "mae_image",
                             "slice_ssim_brain")}})
        entry = {"model": model, "n_controls": 3}
        for m in ("ssim_brain", "psnr_brain", "rmse_brain", "mae_brain"):
            entry[f"{m}_mean"], entry[f"{m}_sd"] = 0.8, 0.05
        entry.update(fid=float("nan"), spectrum_distance=0.12)
        summary.append(entry)
        for source in ("real", "synthetic"):
            values = 0.7 ** np.arange(1, 17)
            spectra += [{"model": model, "source": source, "component": k + 1,
                         "value": v / values.sum()} for k, v in enumerate(values)]
    files.write_tsv(root / "group" / "translation.tsv", pd.DataFrame(rows))
    files.write_tsv(root / "group" / "translation_summary.tsv", pd.DataFrame(summary))
    files.write_tsv(root / "group" / "spectra.tsv", pd.DataFrame(spectra))


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    root = build_output(tmp_path_factory.mktemp("out"), figures=False, layout=LAYOUT)
    aggregate(root, PEOPLE)
    return root


def test_group_report_without_translation(output):
    write_subject_report(output, "01")  # only sub-01 has a page: only it is linked
    page = write_group_report(output)
    assert page == output / "group" / "group.html"
    assert check_links(page) == []
    text = page.read_text()
    for word in ("tissue", "tissueNorm", "Detection rate", "False clusters per control",
                 "left-temporal", "right-parietal", "sub-02", "sub-03",
                 'href="../sub-01.html"', "figures/rates.png", "No translation metrics"):
        assert word in text, word
    assert 'href="../sub-02.html"' not in text
    assert (output / "group" / "figures" / "rates.png").stat().st_size > 5_000
    assert "http://" not in text and "https://" not in text


def test_group_report_with_translation(output):
    translation_tables(output)
    try:
        page = write_group_report(output)
        text = page.read_text()
    finally:
        for name in ("translation", "translation_summary", "spectra"):
            (output / "group" / f"{name}.tsv").unlink()
    assert check_links(page) == []
    for word in ("cyclegan", "figures/translation_metrics.png", "figures/spectra.png",
                 "--fid-weights", "SSIM brain", "spectrum distance"):
        assert word in text, word


def test_comparison_table_side_by_side(output):
    summary = pd.read_csv(output / "group" / "summary.tsv", sep="\t", na_values=["n/a"])
    table = comparison_table(summary)
    assert list(table.columns) == ["measure", "tissue", "tissueNorm"]
    det = table.set_index("measure").loc["Detection rate (patients with ≥ 1 cluster)"]
    assert det["tissue"].startswith("0.50 [") and det["tissue"].endswith("(1/2)")
    assert det["tissueNorm"].startswith("1.00 [")


@pytest.mark.parametrize("group", ["patient", "control"])
def test_group_report_one_group_only(tmp_path, group):
    """Zero controls or zero patients: undefined measures read n/a, and the page renders."""
    root = build_output(tmp_path, figures=False, layout={k: LAYOUT[k] for k in ("01", "03")})
    aggregate(root, {k: Participant(k, group, PEOPLE[k].foci if group == "patient" else ())
                     for k in ("01", "03")})
    page = write_group_report(root)
    assert check_links(page) == []
    text = page.read_text()
    assert "tissueNorm" in text and "n/a" in text
    assert ("No controls" if group == "patient" else "No patients") in text


def test_group_report_without_group_tables(tmp_path):
    page = write_group_report(tmp_path)
    assert check_links(page) == []
    assert "run the group level first" in page.read_text()


def test_reports_without_citation_module(output, monkeypatch):
    """The methods block is skipped (no error) when the citation module is missing."""
    import sys

    import pseudopet_bids.reports as reports

    monkeypatch.setitem(sys.modules, "pseudopet_bids.reports.citation", None)
    monkeypatch.delattr(reports, "citation", raising=False)
    text = write_group_report(output).read_text()
    assert 'href="#methods"' not in text and "tissueNorm" in text
    page = write_subject_report(output, "01")
    assert check_links(page) == [] and "Methods text" not in page.read_text()
