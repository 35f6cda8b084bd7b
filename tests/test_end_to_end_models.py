"""End to end with trained models: group --train (tiny presets), then participant --model."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.io import files
from pseudopet_bids.cli.run import main
from pseudopet_bids.models import checkpoint as ckpt
from tests.conftest import assert_bids_valid

pytestmark = pytest.mark.slow
FAST = ["--skip-bids-validation", "--omp-nthreads", "1"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """3 controls (one without PET) + 1 patient, one CycleGAN and one SynDiff trained."""
    from pseudopet_bids.simulate.cohort import simulate_cohort

    base = tmp_path_factory.mktemp("e2e_models")
    bids = base / "bids"
    simulate_cohort(bids, n_controls=3, n_patients=1, seed=5, t1_voxel_mm=2.0)
    shutil.rmtree(bids / "sub-C03" / "pet")  # a T1w-only control feeds the MRI domain only
    out = base / "out"
    codes = {}
    for model in ("cyclegan", "syndiff"):
        codes[model] = main([str(bids), str(out), "group", "--train", "--model", model,
                             "--preset", "tiny", "--train-steps", "4", "--checkpoint-every",
                             "2", "--nprocs", "2", *FAST])
    return bids, out, codes


def test_training_writes_model_folders(cohort):
    _, out, codes = cohort
    assert codes == {"cyclegan": 0, "syndiff": 0}
    for model in ("cyclegan", "syndiff"):
        folder = out / "models" / model
        card = ckpt.read_card(folder)
        assert card["model"] == model and card["preset"] == "tiny" and card["steps_done"] == 4
        assert card["weights_sha256"] == files.sha256_file(folder / ckpt.WEIGHTS)
        assert "sub-C03" in card["training_subjects"]["mri"]
        assert "sub-C03" not in card["training_subjects"]["pet"]
        assert "sub-P01" not in json.dumps(card["training_subjects"])  # controls only
        assert (folder / "train_log.csv").exists()
        assert (folder / ckpt.STATE_DIR / "training_state.json").exists()


def test_retraining_same_settings_is_skipped(cohort, caplog):
    bids, out, _ = cohort
    before = (out / "models" / "cyclegan" / ckpt.WEIGHTS).stat().st_mtime_ns
    assert main([str(bids), str(out), "group", "--train", "--model", "cyclegan", "--preset",
                 "tiny", "--train-steps", "4", *FAST]) == 0
    assert "already trained with these settings" in caplog.text
    assert (out / "models" / "cyclegan" / ckpt.WEIGHTS).stat().st_mtime_ns == before


def test_other_settings_refused_without_force(cohort, caplog):
    bids, out, _ = cohort
    code = main([str(bids), str(out), "group", "--train", "--model", "cyclegan", "--preset",
                 "tiny", "--train-steps", "5", *FAST])
    assert code == 64
    assert "config_hash" in caplog.text


@pytest.mark.parametrize("model", ["cyclegan", "syndiff"])
def test_participant_with_trained_model(cohort, model):
    bids, out, _ = cohort
    extra = ["--n-samples", "2"] if model == "syndiff" else []
    assert main([str(bids), str(out), "participant", "--participant-label", "P01",
                 "--model", model, *extra, *FAST]) == 0
    pet = out / "sub-P01" / "pet"
    pseudo = next(pet.glob(f"*_desc-{model}Pseudonormal_pet.nii.gz"))
    side = json.loads(pseudo.with_name(pseudo.name.replace(".nii.gz", ".json")).read_text())
    card = ckpt.read_card(out / "models" / model)
    assert side["Model"] == model and side["ModelSHA256"] == card["weights_sha256"]
    assert side["NSamples"] == (2 if model == "syndiff" else 1)
    # the model card is referenced by path and sha256, not copied into every sidecar
    params = side["ModelParameters"]
    assert params["ModelCard"] == f"bids::models/{model}/{ckpt.CARD}"
    assert params["ModelCardSHA256"] == files.sha256_file(out / "models" / model / ckpt.CARD)
    assert "Validation" not in params and "ModelGrid" not in params
    zside = json.loads(next(pet.glob(f"*_stat-z_desc-{model}_statmap.json")).read_text())
    assert "ModelParameters" not in zside and zside["ModelCard"] == params["ModelCard"]
    assert zside["ModelFit"].endswith(pseudo.name.replace(".nii.gz", ".json"))
    assert side["SkullStripped"] is True and zside["SkullStripped"] is True
    data = np.asarray(nib.load(pseudo).dataobj)
    mask = np.asarray(nib.load(next((out / "sub-P01" / "anat").glob("*_desc-brain_mask.nii.gz"))
                               ).dataobj) > 0
    assert np.isfinite(data).all() and data[mask].std() > 0 and not data[~mask].any()
    sd = list(pet.glob(f"*_desc-{model}Pseudonormalsd_pet.nii.gz"))
    assert len(sd) == (1 if model == "syndiff" else 0)
    assert (pet.parent / "anat").is_dir()
    assert list(pet.glob(f"*_stat-z_desc-{model}_statmap.nii.gz"))


def test_spread_rule_needs_samples_and_widens_z(cohort, tmp_path):
    bids, out, _ = cohort
    # refused before anything is written: a deterministic model, or one sample
    for model, n in (("cyclegan", "4"), ("syndiff", "1")):
        assert main([str(bids), str(tmp_path / "o"), "participant", "--participant-label",
                     "P01", "--model", str(out / "models" / model), "--n-samples", n,
                     "--z-reference", "spread", *FAST]) == 64
        assert not (tmp_path / "o").exists()
    assert main([str(bids), str(out), "participant", "--participant-label", "P01", "--model",
                 "syndiff", "--n-samples", "2", "--z-reference", "spread", *FAST]) == 0
    pet = out / "sub-P01" / "pet"
    spread = np.asarray(nib.load(next(pet.glob("*_stat-z_desc-syndiffSpread_statmap.nii.gz"))
                                 ).dataobj)
    side = json.loads(next(pet.glob("*_stat-z_desc-syndiffSpread_statmap.json")).read_text())
    assert "sample spread" in side["ZReference"]
    assert list(pet.glob("*_desc-syndiffSpreadFocus_clusters.tsv"))
    plain = next(pet.glob("*_stat-z_desc-syndiff_statmap.nii.gz"), None)
    if plain is not None:  # the paper's Z of the same run settings: never smaller in magnitude
        z = np.asarray(nib.load(plain).dataobj)
        inside = spread != 0
        assert np.all(np.abs(spread[inside]) <= np.abs(z[inside]) * 1.0001 + 1e-6)


def test_missing_model_is_a_missing_input(cohort, tmp_path):
    bids, _, _ = cohort
    assert main([str(bids), str(tmp_path / "o"), "participant", "--model", "syndiff",
                 *FAST]) == 66
    assert not (tmp_path / "o").exists()


def test_cuda_request_without_gpu_is_a_usage_error(cohort, tmp_path, monkeypatch):
    import torch

    bids, out, _ = cohort
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = str(out / "models" / "cyclegan")
    assert main([str(bids), str(tmp_path / "o"), "participant", "--model", model,
                 "--device", "cuda", *FAST]) == 64
    assert not (tmp_path / "o").exists()
    assert main([str(bids), str(tmp_path / "t"), "group", "--train", "--model", "cyclegan",
                 "--preset", "tiny", "--device", "cuda", *FAST]) == 64
    assert not (tmp_path / "t").exists()


def test_train_option_checks(cohort, tmp_path):
    bids, _, _ = cohort
    with pytest.raises(SystemExit) as exc:
        main([str(bids), str(tmp_path / "o"), "participant", "--train", "--model", "cyclegan"])
    assert exc.value.code == 64
    with pytest.raises(SystemExit) as exc:
        main([str(bids), str(tmp_path / "o"), "group", "--train"])
    assert exc.value.code == 64


def test_both_models_side_by_side_in_reports_and_citation(cohort):
    from pseudopet_bids.reports.html import check_links

    bids, out, _ = cohort
    for model in ("cyclegan", "syndiff"):  # (no-op when the parametrized test ran first)
        assert main([str(bids), str(out), "participant", "--participant-label", "P01",
                     "--model", model, *FAST]) == 0
    pet = out / "sub-P01" / "pet"
    for model in ("cyclegan", "syndiff"):
        assert len(list(pet.glob(f"*_desc-{model}Focus_clusters.tsv"))) == 1
    page = (out / "sub-P01.html").read_text()
    assert "cyclegan" in page and "syndiff" in page
    assert check_links(out / "sub-P01.html") == []
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "CycleGAN" in citation and "SynDiff" in citation
    bib = (out / "logs" / "CITATION.bib").read_text()
    assert "zhu2017cyclegan" in bib.lower() or "cyclegan" in bib.lower()
    assert main([str(bids), str(out), "group", *FAST]) == 0
    summary = pd.read_csv(out / "group" / "summary.tsv", sep="\t")
    assert {"cyclegan", "syndiff"} <= set(summary["analysis"])
    group_page = (out / "group" / "group.html").read_text()
    assert "cyclegan" in group_page and "syndiff" in group_page
    assert check_links(out / "group" / "group.html") == []


def test_outputs_with_models_pass_bids_validator(cohort):
    _, out, _ = cohort
    assert_bids_valid(out)


# --------------------------------------------------------------------------- registries

TOY_METHODS = ("The pseudo-normal PET came from the toy model `${model_name}` (${steps} steps), "
               "a test double of a CycleGAN [@zhu2017cyclegan].")
TOY_RULE_METHODS = "Toy rule: D was standardised by its median and MAD over grey matter."


@pytest.fixture
def toy_model_and_rule():
    """A model and a detection rule registered the way a new module would register them."""
    from pseudopet_bids.detect.rules import (DetectionRule, RuleInputs, register_rule,
                                             unregister_rule)
    from pseudopet_bids.models.cyclegan import CycleGAN
    from pseudopet_bids.models.registry import (ModelSpec, model_spec, register_model,
                                                unregister_model)

    class ToyModel(CycleGAN):
        kind = "toy"

    def robust_z(inputs: RuleInputs):
        values = inputs.diff[inputs.search]
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median))) * 1.4826
        z = np.where(inputs.search, (inputs.diff - median) / mad, 0.0).astype(np.float32)
        return z, {"ZReference": "toy: median/MAD of D over grey matter"}

    cyclegan = model_spec("cyclegan")
    register_model(ModelSpec(name="toy", title="Toy", loader=lambda: ToyModel,
                             methods=TOY_METHODS, presets=cyclegan.presets,
                             training=cyclegan.training))
    register_rule(DetectionRule(name="toyrule", suffix="Toy", title="a toy reference",
                                reference_name="toy robust reference", score=robust_z,
                                methods=TOY_RULE_METHODS))
    yield
    unregister_model("toy")
    unregister_rule("toyrule")


def test_a_registered_model_and_rule_reach_every_output(cohort, toy_model_and_rule, tmp_path):
    """One registry entry each, and no other edit: the model and the rule appear in --help,
    the Boutiques descriptor, the derivatives, the reports and the citation text."""
    from pseudopet_bids.cli import boutiques
    from pseudopet_bids.cli.parser import build_parser

    bids, cohort_out, _ = cohort
    help_text = " ".join(build_parser().format_help().split())  # argparse wraps lines
    assert "{tissue,cyclegan,syndiff,toy,PATH}" in help_text
    assert "{subject,controls,asymmetry,spread,toyrule}" in help_text
    assert "toy robust reference" in help_text
    inputs = {i["id"]: i for i in boutiques.descriptor()["inputs"]}
    assert "toyrule" in inputs["z_reference"]["value-choices"]

    out, work = tmp_path / "out", cohort_out.parent / "out_work"  # preprocessing cache reused
    common = [*FAST, "-w", str(work)]
    assert main([str(bids), str(out), "group", "--train", "--model", "toy", "--preset", "tiny",
                 "--train-steps", "2", *common]) == 0
    assert ckpt.read_card(out / "models" / "toy")["model"] == "toy"
    assert main([str(bids), str(out), "participant", "--participant-label", "P01", "C01",
                 "--model", "toy", "--z-reference", "toyrule", *common]) == 0
    pet = out / "sub-P01" / "pet"
    assert list(pet.glob("*_desc-toyPseudonormal_pet.nii.gz"))
    zmap = next(pet.glob("*_stat-z_desc-toyToy_statmap.nii.gz"))
    side = json.loads(zmap.with_name(zmap.name.replace(".nii.gz", ".json")).read_text())
    assert side["Model"] == "toy" and side["ZReference"].startswith("toy:")
    assert list(pet.glob("*_desc-toyToyFocus_clusters.tsv"))
    assert list((out / "sub-P01" / "anat").glob("*_desc-toyToyFocus_mask.nii.gz"))
    assert main([str(bids), str(out), "group", *FAST]) == 0
    page = (out / "sub-P01.html").read_text()
    assert "Analysis toyToy" in page and "Z against a toy reference" in page
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "the toy model `toy` (2 steps)" in citation and TOY_RULE_METHODS in citation
    summary = pd.read_csv(out / "group" / "summary.tsv", sep="\t")
    assert set(summary["analysis"]) == {"toyToy"}
    assert set(summary["z_reference"]) == {"toyrule"}
    assert "toy robust reference" in (out / "group" / "group.html").read_text()
