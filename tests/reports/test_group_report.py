"""Group report from the real group tables of a small fake output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.io import files
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.evaluate.group import aggregate
from pseudopet_bids.reports.group import comparison_table, lobe_tables, write_group_report
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
                 'href="../sub-01.html"', "figures/rates.png", "No translation metrics",
                 "Trade-off between sensitivity and false clusters",
                 "Where controls", "false clusters fall", "figures/control_clusters.png"):
        assert word in text, word
    # the fixture's cluster tables are of an older version: no z_mass, so no FROC curve
    assert "No FROC curve" in text and "figures/froc.png" not in text
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
    # the tissue baseline (fitted to each subject's PET) is left out, saying why
    table = text.split('id="translation"')[1].split("</table>")[0]
    assert "<td class=\"text\">cyclegan</td>" in table and ">tissue<" not in table
    assert "Not shown for the" in text and "fitted to each subject" in text


def test_group_report_translation_of_the_tissue_model_only(output):
    translation_tables(output)
    try:
        for name in ("translation", "translation_summary", "spectra"):
            path = output / "group" / f"{name}.tsv"
            table = pd.read_csv(path, sep="\t")
            files.write_tsv(path, table[table["model"] == "tissue"])
        text = write_group_report(output).read_text()
    finally:
        for name in ("translation", "translation_summary", "spectra"):
            (output / "group" / f"{name}.tsv").unlink()
    section = text.split('id="translation"')[1].split("</section>")[0]
    assert "Not shown for the" in section and "<table" not in section
    assert "<img" not in section and "No translation metrics" not in section


def test_comparison_table_side_by_side(output):
    summary = pd.read_csv(output / "group" / "summary.tsv", sep="\t", na_values=["n/a"])
    table = comparison_table(summary)
    assert list(table.columns) == ["measure", "tissue", "tissueNorm"]
    det = table.set_index("measure").loc["Detection rate (patients with ≥ 1 cluster)"]
    assert det["tissue"].startswith("0.50 [") and det["tissue"].endswith("(1/2)")
    assert det["tissueNorm"].startswith("1.00 [")
    top = table.set_index("measure").loc["Localization accuracy, top-ranked cluster"]
    assert top["tissue"].startswith("1.00 [") and top["tissue"].endswith("(1/1)")
    # older tables have no tiers: unknown, not 0
    high = table.set_index("measure").loc["High-tier clusters per control (lower is better)"]
    # false-positive measures say which way is good
    assert "Controls with ≥ 1 cluster (false positives: lower is better)" in list(
        table["measure"])
    assert high["tissue"] == "n/a (n = 1)" and high["tissueNorm"].startswith("0.00")
    assert not any("largest" in m for m in table["measure"])


def test_lobe_tables_of_an_older_version(output):
    lobes = pd.read_csv(output / "group" / "lobes.tsv", sep="\t")
    assert "localized: top-ranked / any" in lobe_tables(lobes)
    old = lobes.rename(columns={"localized_top": "localized_largest"})
    assert "localized: largest / any" in lobe_tables(old)


def _add_tiers(root: Path) -> None:
    """Give the fixture's cluster tables the columns of the current version."""
    for path in sorted(root.glob("sub-*/**/pet/*_clusters.tsv")):
        table = pd.read_csv(path, sep="\t")
        n = len(table)
        table = table.rename(columns={f"peak_template_{a}": f"peak_template_{a}_mm"
                                      for a in "xyz"})
        table["tier"] = ["high", "possible", "low"][:n]
        table["z_mass"] = [3000.0 / (k + 1) for k in range(n)]
        table["p_corrected"] = [0.01 * (k + 1) for k in range(n)]
        files.write_tsv(path, table)


def test_group_report_tradeoff_and_false_clusters(tmp_path):
    root = build_output(tmp_path, figures=False, layout=LAYOUT)
    _add_tiers(root)
    aggregate(root, PEOPLE)
    page = write_group_report(root)
    assert check_links(page) == []
    text = page.read_text()
    for word in ("figures/froc.png", "figures/control_clusters.png", "operating points",
                 "tier high or possible", "Patients with a high-tier cluster in the focus",
                 "High-tier clusters per control", "free-response ROC"):
        assert word in text, word
    assert (root / "group" / "figures" / "froc.png").stat().st_size > 5_000
    assert (root / "group" / "figures" / "control_clusters.png").stat().st_size > 5_000
    # the page still renders when the FROC tables are missing (a group run of an older version)
    for name in ("froc", "froc_points", "control_clusters"):
        (root / "group" / f"{name}.tsv").unlink()
    text = write_group_report(root).read_text()
    assert "No FROC table" in text and "No table of control clusters" in text


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
