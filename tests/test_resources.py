"""Template resources: TemplateFlow home first (read from disk only), packaged fallback."""

from __future__ import annotations

import socket

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids import resources

TPL = resources.TEMPLATE_NAME


@pytest.fixture
def fresh_cache():
    resources._template_arrays.cache_clear()
    resources._atlas_arrays.cache_clear()
    yield
    resources._template_arrays.cache_clear()
    resources._atlas_arrays.cache_clear()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def make_templateflow_home(home, marker: float = 0.5, skip: str | None = None):
    """A TemplateFlow home with tpl-MNI152NLin2009aSym res-1 files, named as TemplateFlow names
    them; the T1w has a skull (1.0 outside the brain) so that masking it is visible."""
    packaged = {k: resources.load_template(k, "packaged") for k in ("T1w", "mask", "GM", "WM",
                                                                     "CSF")}
    folder = home / f"tpl-{TPL}"
    folder.mkdir(parents=True)
    mask = packaged["mask"].get_fdata() > 0
    data = {"T1w": np.where(mask, packaged["T1w"].get_fdata() * 200.0, 40.0),
            "mask": mask.astype(np.uint8), "GM": packaged["GM"].get_fdata(),
            "WM": packaged["WM"].get_fdata(), "CSF": packaged["CSF"].get_fdata()}
    data["GM"][100, 100, 100] = marker
    for kind, entities in resources.TEMPLATEFLOW_FILES.items():
        path = folder / f"tpl-{TPL}_res-1_{entities}.nii.gz"
        if kind == skip:
            path.symlink_to(folder / ".git/annex/objects/missing")  # not fetched
            continue
        nib.save(nib.Nifti1Image(data[kind].astype(np.float32), packaged["mask"].affine), path)
    return home


def test_templateflow_home_is_used_when_it_holds_the_files(tmp_path, monkeypatch, fresh_cache,
                                                           no_network):
    home = make_templateflow_home(tmp_path / "tf", marker=0.123)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    assert resources.template_source() == f"TemplateFlow {home / f'tpl-{TPL}'}"
    gm = resources.load_template("GM").get_fdata()
    assert gm[100, 100, 100] == pytest.approx(0.123)
    t1 = resources.load_template("T1w").get_fdata()
    mask = resources.load_template("mask").get_fdata() > 0
    assert t1[~mask].max() == 0 and 0.9 < t1[mask].max() <= 1.0  # skull-stripped, in [0, 1]
    # the atlas follows the template grid; the simulator keeps the packaged copy
    assert resources.load_aal().shape == resources.load_template("mask").shape
    assert resources.load_template("GM", "packaged").get_fdata()[100, 100, 100] != \
        pytest.approx(0.123)


@pytest.mark.parametrize("setup", ["no_home", "no_template", "not_fetched"])
def test_packaged_fallback_says_why(tmp_path, monkeypatch, fresh_cache, no_network, setup):
    home = tmp_path / "tf"
    if setup == "no_template":
        home.mkdir()
    elif setup == "not_fetched":
        make_templateflow_home(home, skip="CSF")
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    assert resources.template_source().endswith("(packaged)")
    files, why = resources.templateflow_files()
    assert files is None
    assert ("label-CSF_probseg" in why) if setup == "not_fetched" else ("does not exist" in why)


def test_damaged_templateflow_file_falls_back_with_a_warning(tmp_path, monkeypatch, fresh_cache,
                                                             caplog):
    home = make_templateflow_home(tmp_path / "tf")
    (home / f"tpl-{TPL}" / f"tpl-{TPL}_res-1_label-WM_probseg.nii.gz").write_bytes(b"<html>")
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    assert resources.template_source().endswith("(packaged)")
    assert "unreadable" in caplog.text and "packaged copy" in caplog.text


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="auto or packaged"):
        resources.load_template("T1w", "internet")
