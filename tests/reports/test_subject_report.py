"""Per-participant figures and report on a small fake output folder (real file names)."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.io import files
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.config import RunConfig
from pseudopet_bids.detect.rules import parse_analysis_label
from pseudopet_bids.reports.html import check_links
from pseudopet_bids.reports.subject import (cluster_view, discover, write_subject_figures,
                                            write_subject_report)

SHAPE = (24, 28, 22)
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
AFFINE[:3, 3] = [-46.0, -62.0, -40.0]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: subject -> (session, {analysis: cluster regions, top-ranked first, or None: unfinished})
LAYOUT = {
    "01": (None, {"tissue": ["left-temporal", "left-frontal"], "tissueNorm": ["left-temporal"]}),
    "02": ("1", {"tissue": [], "syndiff": None}),
}


def volumes():
    """T1w-like head, mask, GM, lobes and a PET on a tiny 4 mm grid."""
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1)[:, None, None, None] / 2
    r = np.sqrt((((grid - centre) / (np.array(SHAPE)[:, None, None, None] / 2.3)) ** 2).sum(0))
    mask = r < 0.85
    gm = (np.clip(1 - np.abs(r - 0.7) / 0.12, 0, 1) * mask).astype(np.float32)
    t1 = (np.where(r < 1.0, 60.0, 0.0) + np.where(mask, 40 + 40 * (r < 0.6), 0)).astype(
        np.float32)
    lobes = np.zeros(SHAPE, np.int16)
    lobes[mask] = 9
    lobes[:12][mask[:12]] = 3  # left half: left-temporal
    pet = ((gm * 3 + mask + 0.2) * 1000).astype(np.float32)
    return t1, mask, gm, lobes, pet


def labels_for(regions: list[str]) -> np.ndarray:
    labels = np.zeros(SHAPE, np.int16)
    spots = [(slice(4, 8), slice(8, 12), slice(8, 11)), (slice(14, 17), slice(17, 20),
                                                        slice(11, 14))]
    for k, _ in enumerate(regions[:2]):
        labels[spots[k]] = k + 1
    return labels


def cluster_table(regions: list[str]) -> pd.DataFrame:
    n = len(regions)
    return pd.DataFrame({
        "cluster_id": range(1, n + 1), "n_voxels": [40 - 10 * k for k in range(n)],
        "volume_mm3": [2560.0 - 640 * k for k in range(n)], "peak_zscore": [-4.2 + 0.5 * k
                                                                       for k in range(n)],
        "mean_zscore": [-2.5] * n, "peak_x_mm": [-30.0] * n, "peak_y_mm": [-10.0] * n,
        "peak_z_mm": [2.0] * n, "peak_template_x_mm": [-31.0] * n, "peak_template_y_mm": [-12.0] * n,
        "peak_template_z_mm": [1.0] * n, "region": regions, "region_fraction": [0.8] * n})


class IdentityRegistration:
    """Stands in for TemplateRegistration: T1w and template share one physical space."""

    def to_template(self, img, interpolation="linear", reference=None):
        from pseudopet_bids.reports.mosaic import _resample

        data = _resample(np.asarray(img.dataobj, np.float32), img.affine,
                         reference.shape[:3], reference.affine, 1)
        return nib.Nifti1Image(data, reference.affine)


def fake_pre(t1, mask, gm, lobes, pet, registration=None):
    return types.SimpleNamespace(t1=nib.Nifti1Image(t1, AFFINE), mask=mask, tissues={"GM": gm},
                                 pet=pet, lobes=lobes, aal=lobes, affine=AFFINE,
                                 registration=registration or IdentityRegistration())


def build_output(root: Path, figures: bool = True, layout: dict | None = None) -> Path:
    """A fake pseudopet output folder: NIfTIs, sidecars, cluster TSVs, configs, and the real
    figures of sub-01's ``tissue`` analysis (when ``figures``)."""
    layout = LAYOUT if layout is None else layout
    t1, mask, gm, lobes, pet = volumes()
    for subject, (session, analyses) in layout.items():
        prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "") + "_trc-FDG"
        paths = der.SubjectPaths(root, subject, session, Path(f"{prefix}_pet.nii.gz"))
        files.write_nifti(paths.anat("desc-preproc_T1w.nii.gz"), t1, AFFINE)
        files.write_nifti(paths.anat("desc-brain_mask.nii.gz"), mask, AFFINE, np.uint8)
        files.write_nifti(paths.pet("space-T1w_desc-preproc_pet.nii.gz"), pet * mask, AFFINE)
        files.write_json(paths.pet("space-T1w_desc-preproc_pet.json"), {"Coregistration": {
            "Method": "ANTs rigid, Mattes mutual information",
            "Metric": -0.512 if subject == "01" else -0.431}})
        for analysis, regions in analyses.items():
            model, reference = parse_analysis_label(analysis)
            files.write_nifti(paths.pseudonormal(model), pet * mask * 0.95, AFFINE)
            if model == "syndiff":
                files.write_nifti(paths.pseudonormal(model, sd=True), pet * 0.05, AFFINE)
            z = np.where(gm > 0.3, -0.5, 0).astype(np.float32)
            files.write_nifti(paths.zmap(analysis), z, AFFINE)
            side = {"Model": model, "ModelSHA256": "ab" * 32, "NSamples": 1, "Seed": 42,
                    "ZThreshold": -1.65, "ClusterMinVolume_mm3": 1500.0, "GMThreshold": 0.5,
                    "Connectivity": 26, "SearchRegion": "cortex", "pseudopetVersion": "0.1.0",
                    "ZReference": "healthy-control normative model" if reference == "controls"
                    else "subject grey matter",
                    "IntensityNormalization": {"Method": "gm-median", "Scale": 1234.5},
                    "Sources": [f"bids:raw:sub-{subject}/pet/{prefix}_pet.nii.gz"]}
            files.write_json(paths.zmap(analysis, ".json"), side)
            if regions is None:  # unfinished: no cluster table, no config
                continue
            files.write_tsv(paths.clusters(analysis), cluster_table(regions))
            cfg = RunConfig.from_flat(dict(bids_dir=str(root / "bids"), output_dir=str(root),
                                           analysis_level="participant",
                                           z_reference=reference))
            files.atomic_write_text(paths.config(analysis), cfg.to_toml()
                                  + '\n[timings_s]\n"brain mask" = 3.5\ntotal = 60.0\n')
    if figures:
        subject, (session, analyses) = "01", layout["01"]
        paths = der.SubjectPaths(root, subject, session, Path("sub-01_trc-FDG_pet.nii.gz"))
        z = np.where(gm > 0.3, -0.5, 0).astype(np.float32)
        labels = labels_for(analyses["tissue"])
        z[labels > 0] = -3.0
        write_subject_figures(paths, fake_pre(t1, mask, gm, lobes, pet), pet * mask,
                              pet * mask * 0.95, None, z, labels, "tissue", "tissue", 1.65)
    return root


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    return build_output(tmp_path_factory.mktemp("out"))


def test_write_subject_figures_names_and_pngs(output):
    figs = sorted(p.name for p in (output / "sub-01" / "figures").glob("*.png"))
    assert figs == sorted(["sub-01_desc-segmentation.png", "sub-01_desc-templatereg.png",
                           "sub-01_desc-templateregReference.png",
                           "sub-01_trc-FDG_desc-coregistration.png",
                           "sub-01_trc-FDG_desc-coregistrationReference.png",
                           "sub-01_trc-FDG_desc-tissuePet.png",
                           "sub-01_trc-FDG_desc-tissueZmap.png"])
    for name in figs:
        data = (output / "sub-01" / "figures" / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and 5_000 < len(data) < 250_000


def test_registration_frames_share_their_layout(output):
    """The two frames of each flicker have the same pixel size and differ in content."""
    from PIL import Image

    folder = output / "sub-01" / "figures"
    for name in ("sub-01_desc-templatereg", "sub-01_trc-FDG_desc-coregistration"):
        with Image.open(folder / f"{name}.png") as a, \
                Image.open(folder / f"{name}Reference.png") as b:
            assert a.size == b.size
            assert np.asarray(a.convert("RGB")).tolist() != np.asarray(b.convert("RGB")).tolist()


def test_write_subject_figures_survives_a_failing_figure(tmp_path, caplog):
    class Broken:
        def to_template(self, *args, **kwargs):
            raise RuntimeError("no transform")

    t1, mask, gm, lobes, pet = volumes()
    paths = der.SubjectPaths(tmp_path, "03", "a", Path("sub-03_ses-a_trc-FDG_pet.nii.gz"))
    pre = fake_pre(t1, mask, gm, lobes, pet, Broken())
    pre.pet = None  # T1w-only: no coregistration figure
    with caplog.at_level(logging.WARNING):
        out = write_subject_figures(paths, pre, pet, pet * 0.9, pet * 0.01, np.zeros(SHAPE),
                                    np.zeros(SHAPE, np.int16), "syndiff", "syndiffNorm", 2.0)
    assert sorted(p.name for p in out) == sorted([
        "sub-03_ses-a_desc-segmentation.png", "sub-03_ses-a_trc-FDG_desc-syndiffPet.png",
        "sub-03_ses-a_trc-FDG_desc-syndiffNormZmap.png"])
    assert all(p.parent == tmp_path / "sub-03" / "figures" for p in out)
    assert "templatereg" in caplog.text and "no transform" in caplog.text


def test_discover(output):
    units = {u.session: u for u in discover(output, "02")}
    assert list(units) == ["1"]
    (pet,) = units["1"].pets
    assert pet.prefix == "sub-02_ses-1_trc-FDG"
    assert pet.models == ["syndiff", "tissue"] and pet.analyses == ["syndiff", "tissue"]
    (pet,) = discover(output, "01")[0].pets
    assert pet.analyses == ["tissue", "tissueNorm"]


def test_subject_report_links_analyses_and_regions(output):
    page = write_subject_report(output, "01", Participant("01", "patient", ("left-temporal",)))
    assert page == output / "sub-01.html"
    assert check_links(page) == []
    text = page.read_text()
    for word in ("tissue", "tissueNorm", "left-temporal", "left-frontal", "patient",
                 "sub-01/figures/sub-01_trc-FDG_desc-tissueZmap.png",
                 "sub-01/figures/sub-01_desc-segmentation.png",
                 "sub-01/figures/sub-01_desc-templatereg.png",
                 "sub-01/figures/sub-01_trc-FDG_desc-coregistration.png",
                 "sub-01/figures/sub-01_trc-FDG_desc-tissuePet.png",
                 "Provenance of tissueNorm", "ab" * 32, "Run time per step"):
        assert word in text, word
    # registrations as flickers: both frames on the page, CSS only (no script)
    for name in ("sub-01_desc-templateregReference.png",
                 "sub-01_trc-FDG_desc-coregistrationReference.png"):
        assert f"sub-01/figures/{name}" in text, name
    assert text.count('class="flicker"') == 2
    flickers = re.findall(r'<div class="flicker">.*?</figure>', text, flags=re.S)
    assert len(flickers) == 2 and not any("<script" in f for f in flickers)
    assert "Coregistration quality" in text and "-0.512" in text and "ranks 1 of 2" in text
    assert 'id="about"' in text and 'id="errors"' in text
    assert "tissueNormZmap.png" not in text  # not made: not referenced
    # outside the inlined viewer scripts (NiiVue's comments cite web pages; that the viewer
    # requests nothing from the network is checked in Chromium: test_viewer_browser.py)
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)
    assert "http://" not in markup and "https://" not in markup
    if importlib.util.find_spec("pseudopet_bids.reports.citation") is not None:
        assert "Methods text of tissue" in text


def test_subject_report_session_unfinished_and_no_figures(output):
    page = write_subject_report(output, "sub-02")
    assert check_links(page) == []
    text = page.read_text()
    for word in ("sub-02_ses-1_trc-FDG", "session 1", "syndiff", "incomplete",
                 "No cluster survived", "No cluster table", "SD of the stochastic samples",
                 "figure not available"):
        assert word in text, word
    assert "<img" not in text


def test_subject_report_group_from_subjects_tsv(output, tmp_path):
    files.write_tsv(output / "group" / "subjects.tsv", pd.DataFrame([{
        "analysis": "tissue", "model": "tissue", "z_reference": "subject",
        "participant_id": "sub-02", "session": "1", "group": "control", "focus": "n/a",
        "n_clusters": 0, "detected": False, "regions": "n/a", "top_region": "n/a",
        "localized_top": None, "localized_any": None}]))
    try:
        text = write_subject_report(output, "02").read_text()
    finally:
        (output / "group" / "subjects.tsv").unlink()
    assert "control" in text


def test_subject_report_without_outputs(tmp_path):
    page = write_subject_report(tmp_path, "99")
    assert check_links(page) == []
    assert "No pseudopet outputs found" in page.read_text()


def test_cluster_view():
    view = cluster_view(cluster_table(["left-temporal"]))
    assert list(view.iloc[0])[:3] == ["1", "left-temporal", "80%"]
    assert view.iloc[0]["volume (ml)"] == "2.56"
    assert cluster_view(cluster_table([])).empty or len(cluster_view(cluster_table([]))) == 0


def test_sidecars_are_json(output):
    """The fake folder uses the real names: the statmap sidecar sits next to the statmap."""
    side = output / "sub-01/pet/sub-01_trc-FDG_space-T1w_stat-z_desc-tissue_statmap.json"
    assert json.loads(side.read_text())["Model"] == "tissue"


def _fake_run(logs: Path, stamp: str, lines: list[str], labels: list[str] | None = None,
              command: list[str] | None = None) -> None:
    from pseudopet_bids.cli.environment import run_table

    cfg = RunConfig.from_flat(dict(bids_dir="/data/bids", output_dir=str(logs.parent),
                                   analysis_level="participant", work_dir="/scratch/work",
                                   participant_label=labels or []))
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"config_participant_{stamp}.toml").write_text(cfg.to_toml() + run_table(command))
    (logs / f"pseudopet_participant_{stamp}.log").write_text("\n".join(lines) + "\n")


def test_subject_report_about_and_errors(tmp_path):
    out = build_output(tmp_path / "out", figures=False)
    logs = out / "logs"
    _fake_run(logs, "20260101-100000-hostA-11", [
        "2026-01-01 10:00:01,000 pseudopet_bids.progress [INFO] sub-01: image intake ...",
        "2026-01-01 10:00:09,000 pseudopet_bids.x [WARNING] sub-01: an old warning"],
        command=["pseudopet", "/data/bids", str(out), "participant"])
    _fake_run(logs, "20260102-100000-hostA-12", [
        "2026-01-02 10:00:01,000 pseudopet_bids.progress [INFO] sub-01: image intake ...",
        "2026-01-02 10:00:05,000 pseudopet_bids.x [WARNING] sub-01_trc-FDG: figure "
        "x.png not made: RuntimeError: <boom>",
        "2026-01-02 10:00:06,000 pseudopet_bids.x [WARNING] sub-011: not this one",
        "Traceback (most recent call last):"],
        command=["pseudopet", "/data/bids", str(out), "participant", "--participant-label",
                 "01", "--z-threshold", "2.33 "])
    # a later job of an array that processed another participant only
    _fake_run(logs, "20260103-100000-hostB-13", [
        "2026-01-03 10:00:01,000 pseudopet_bids.x [ERROR] sub-01: would be wrong here"],
        labels=["02"])
    text = write_subject_report(out, "01").read_text()
    about = text[text.index('id="about"'):text.index('id="errors"')]
    errors = text[text.index('id="errors"'):]
    assert "--participant-label 01 --z-threshold &#x27;2.33 &#x27;" in about  # shell-quoted
    assert "/scratch/work" in about and "hostA" in about
    assert "logs/pseudopet_participant_20260102-100000-hostA-12.log" in about
    assert "x.png not made: RuntimeError: &lt;boom&gt;" in errors
    assert "old warning" not in errors and "sub-011" not in errors
    assert "would be wrong here" not in errors
    assert '<div class="card">errors and warnings<b>1</b></div>' in text
    # a failed (subject, session) is reported from its status file
    files.write_json(logs / "sub-01_status.json", {"state": "failed", "last_error": {
        "type": "ProcessingError", "message": "PET has no signal", "stage": "detection",
        "time": "2026-01-02T10:00:07+00:00"}})
    errors = write_subject_report(out, "01").read_text().split('id="errors"')[1]
    assert "ProcessingError: PET has no signal" in errors and "detection" in errors
    # sub-02: no log names it, nothing failed
    text = write_subject_report(out, "02").read_text()
    assert "No errors to report." in text and "No participant-level log" in text


def test_confidence_note_keeps_its_markup():
    """The fallback note was escaped twice ("&lt;b&gt;high&lt;/b&gt;" on the page)."""
    from pseudopet_bids.reports.subject import _confidence_note

    html = _confidence_note(pd.DataFrame({"p_method": ["random-field (extent; <no controls>)"]}))
    assert 'class="note"' in html and "<b>high</b>" in html and "&lt;b&gt;" not in html
    assert "random-field (extent; &lt;no controls&gt;)" in html
