"""Citation boilerplate: methods text from the run's settings, bibliography, HTML, atomic files."""

from __future__ import annotations

import itertools
import re
import threading
from pathlib import Path

import pytest

from pseudopet_bids.config import RunConfig
from pseudopet_bids.models.presets import card_hparams, preset
from pseudopet_bids.reports import citation as cit
from pseudopet_bids import provenance

VERSIONS = {"pseudopet": "9.9.9", "python": "3.11.0", "numpy": "1.0", "torch": "2.0"}


@pytest.fixture
def cfg(tmp_path: Path) -> RunConfig:
    return RunConfig.from_flat(dict(bids_dir=str(tmp_path / "bids"),
                                    output_dir=str(tmp_path / "out"),
                                    analysis_level="participant"))


def make_card(model: str, name: str = "small", **extra) -> dict:
    hp = card_hparams({k: v for k, v in preset(model, name).items()
                       if k not in ("steps", "batch_size")})
    card = {"format_version": 1, "model": model, "preset": name, "name": model, "hparams": hp,
            "context_slices": 0, "weights_sha256": "0123456789abcdef" * 4, "steps_done": 1234,
            "training_subjects": {"mri": [f"sub-{i:02d}" for i in range(1, 8)],
                                  "pet": [f"sub-{i:02d}" for i in range(1, 6)],
                                  "validation": ["sub-08", "sub-09"]},
            "software": {"pseudopet": "0.1.0", "torch": "2.13.0"}, "device": "cpu",
            "validation": {"step": 1234, "ssim": 0.81234, "psnr": 24.5, "mae": 0.031}}
    card.update(extra)
    return card


# --------------------------------------------------------------------------- text content


def test_threshold_gives_one_sided_p(cfg):
    default = cit.methods_markdown(cfg, None, VERSIONS)
    assert "Z < −1.65 (one-sided p ≈ 0.05)" in default
    strict = cit.methods_markdown(cfg.replace(z_threshold=2.33), None, VERSIONS)
    assert "Z < −2.33 (one-sided p ≈ 0.01)" in strict
    assert cit.one_sided_p(1.96) == "0.025" and cit.one_sided_p(3.09) == "0.001"


def test_skullstrip_and_detection_settings_change_the_text(cfg):
    deep = cit.methods_markdown(cfg, None, VERSIONS)
    tmpl = cit.methods_markdown(cfg.replace(skullstrip="template"), None, VERSIONS)
    assert "[@fisch2024deepbet]" in deep and "deepbet [@" not in tmpl
    assert "skull-stripped MNI152NLin2009aSym" in tmpl and "fisch2024deepbet" not in tmpl
    other = cit.methods_markdown(cfg.replace(cluster_min_volume=800.0, gm_threshold=0.3,
                                         connectivity=6, search_region="gm",
                                         normalization="brain-mean", seed=7), None, VERSIONS)
    assert "smaller than 800 mm³" in other and "GM probability ≥ 0.3" in other
    assert "6-connectivity: neighbours sharing a face)" in other
    assert "within 2 mm of any AAL grey-matter region" in other
    assert "mean PET value inside the brain mask" in other and "random seed 7" in other
    assert "smaller than 1500 mm³" in deep and "26-connectivity" in deep
    assert "eight lobar regions" in deep


def test_z_reference(cfg):
    subject = cit.methods_markdown(cfg, None, VERSIONS)
    assert "subject's own detection grey matter" in subject
    controls = cfg.replace(z_reference="controls")
    text = cit.methods_markdown(controls, None, VERSIONS)
    assert "normative model built from the healthy control" in text
    assert "leave-one-out" in text and "SHA-256 digest" not in text.split("Detection")[1]
    controls = controls.replace(normative_sha256="feedc0de" * 8)
    text = cit.methods_markdown(controls, None, VERSIONS)
    assert "The normative model used has the SHA-256 digest feedc0defeedc0de…." in text
    bad = cfg.replace(z_reference="nonsense")
    with pytest.raises(ValueError, match="z_reference = 'nonsense'"):
        cit.methods_markdown(bad, None, VERSIONS)


def test_versions_appear_and_missing_ones_are_marked(cfg):
    text = cit.methods_markdown(cfg, None, VERSIONS)
    assert "pseudopet 9.9.9" in text and "NumPy 1.0 [@" in text and "PyTorch 2.0" in text
    assert "SciPy not recorded" in text
    versions = provenance.software_versions()
    assert set(provenance.PACKAGES) | {"pseudopet", "python"} <= set(versions)
    assert versions["numpy"] != provenance.NOT_INSTALLED and all(versions.values())


def test_tissue_cyclegan_syndiff_paragraphs(cfg):
    tissue = cit.methods_markdown(cfg.replace(pet_fwhm=8.0), None, VERSIONS)
    assert "tissue-model baseline" in tissue and "8 mm full width" in tissue
    assert "CycleGAN [@" not in tissue and "SynDiff [@" not in tissue

    cyc = cit.methods_markdown(cfg, make_card("cyclegan"), VERSIONS)
    assert "CycleGAN [@zhu2017cyclegan]" in cyc and "`small` preset" in cyc
    assert "1234 optimization steps" in cyc and "0123456789abcdef…" in cyc
    assert "2 mm (96 × 120 × 80 voxels)" in cyc and "7 healthy controls" in cyc
    assert "2 held-out controls" in cyc and "SSIM) [@wang2004ssim] of 0.812" in cyc
    assert "tissue-model baseline" not in cyc and "stochastic samples" not in cyc

    syn = cit.methods_markdown(cfg.replace(n_samples=8), make_card("syndiff", "paper"),
                               VERSIONS)
    assert "SynDiff [@ozbey2023syndiff]" in syn and "`paper` preset" in syn
    assert "mean of 8 stochastic samples (seed 42)" in syn and "4 large reverse" in syn
    assert "1 mm (256 × 256 × 192 voxels)" in syn
    one = cit.methods_markdown(cfg.replace(n_samples=1), make_card("syndiff"), VERSIONS)
    assert "One stochastic sample was drawn per subject" in one


def test_calibration_and_syndiff_source_change_the_text(cfg):
    cyc = cit.methods_markdown(cfg, make_card("cyclegan"), VERSIONS)
    assert "calibrated to the subject" in cyc and "blurred by the PET resolution (6 mm)" in cyc
    plain = cit.methods_markdown(cfg.replace(calibration="none"), make_card("cyclegan"),
                                 VERSIONS)
    assert "calibrated to the subject" not in plain and "used as the model gave it" in plain
    card = make_card("syndiff")
    real = cit.methods_markdown(cfg, card, VERSIONS)
    assert "conditioned on the subject's T1w." in real and "round trip" not in real
    card["hparams"]["source"] = "cycle"
    cycle = cit.methods_markdown(cfg, card, VERSIONS)
    assert "round trip through the non-diffusive" in cycle


def test_sparse_card_still_renders(cfg):
    card = {"format_version": 1, "model": "cyclegan", "preset": "custom",
            "weights_sha256": "f" * 64, "training_subjects": ["a", "b", "c"],
            "hparams": {"ngf": 8, "n_blocks": 2, "ndf": 8, "n_layers": 2, "lambda_cycle": 5.0,
                        "lambda_identity": 0.0}}
    text = cit.methods_markdown(cfg, card, VERSIONS)
    assert "3 healthy controls" in text and "unrecorded number of optimization" in text
    assert "template-aligned grid" in text and "SSIM" not in text
    with pytest.raises(ValueError, match="model 'vae'"):
        cit.methods_markdown(cfg, {**card, "model": "vae"}, VERSIONS)


# --------------------------------------------------------------------------- bibliography


def test_bib_parses_without_duplicate_keys():
    text = (cit.boilerplate_dir() / "references.bib").read_text(encoding="utf-8")
    entries = cit.parse_bib(text)
    keys = [key for key, _ in entries]
    assert len(keys) == len(set(keys)) == text.count("\n@") >= 20
    for key, entry in entries:
        assert entry.count("{") == entry.count("}"), key
        assert re.search(r"\btitle\s*=", entry) and re.search(r"\byear\s*=", entry) \
            or "@software" in entry, key
    assert set(cit.bib_entries()) == set(keys)


def test_duplicate_bib_key_is_refused(monkeypatch):
    text = (cit.boilerplate_dir() / "references.bib").read_text(encoding="utf-8")
    first_key, first_entry = cit.parse_bib(text)[0]
    monkeypatch.setattr(cit, "_read", lambda name: text + "\n" + first_entry + "\n")
    with pytest.raises(ValueError, match=f"duplicate BibTeX key '{first_key}'"):
        cit.bib_entries()


def test_every_template_key_is_in_the_bib():
    bib = cit.bib_entries()
    for path in cit.boilerplate_dir().glob("*.tmpl"):
        for key in cit.cited_keys(path.read_text(encoding="utf-8")):
            assert key in bib, f"{path.name} cites unknown key {key}"


def test_every_variant_renders_with_known_keys(cfg):
    bib = cit.bib_entries()
    cards = [None, make_card("cyclegan"), make_card("syndiff"),
             make_card("syndiff", "tiny", validation={}, context_slices=2)]
    cards.append(make_card("syndiff") | {"hparams": {**make_card("syndiff")["hparams"],
                                                      "source": "cycle"}})
    for skull, norm, region, zref, conn, n, calibration in itertools.product(
            ("deepbet", "template"), ("gm-median", "brain-mean"), ("cortex", "gm"),
            ("subject", "controls"), (6, 26), (1, 4), ("none", "compartments")):
        run = cfg.replace(skullstrip=skull, normalization=norm, search_region=region,
                          connectivity=conn, n_samples=n, calibration=calibration)
        run.z_reference = zref
        for card in cards:
            text = cit.methods_markdown(run, card, VERSIONS)
            assert "${" not in text and "$" not in text
            assert set(cit.cited_keys(text)) <= set(bib)
    text = cit.methods_markdown(cfg, cards[3], VERSIONS)
    assert "2 neighbouring slice(s) on each side" in text


def test_cited_keys_and_bibtex():
    md = "A [@b2; @a1] and [@a1] and [see @c3, p. 4] but not an e-mail x@y.org or [x]."
    assert cit.cited_keys(md) == ["b2", "a1", "c3"]
    keys = ["wilson1927", "zhu2017cyclegan"]
    out = cit.bibtex(keys)
    assert out.index("@article{wilson1927,") < out.index("@inproceedings{zhu2017cyclegan,")
    assert [k for k, _ in cit.parse_bib(out)] == keys
    with pytest.raises(KeyError, match="no_such_key"):
        cit.bibtex(["wilson1927", "no_such_key"])


def test_boilerplate_dir_missing(monkeypatch, tmp_path):
    fake = tmp_path / "a" / "b" / "citation.py"
    monkeypatch.setattr(cit, "__file__", str(fake))
    with pytest.raises(FileNotFoundError,
                       match=re.escape(str(tmp_path / "a" / "data" / "boilerplate"))):
        cit.boilerplate_dir()


def test_top_level_boilerplate_is_the_packaged_folder():
    top = Path(__file__).resolve().parents[2] / "boilerplate"
    assert top.resolve() == cit.boilerplate_dir().resolve()


# --------------------------------------------------------------------------- HTML


def test_methods_html_is_escaped_and_formatted(cfg):
    md = ("# Title <b>\n\n**Bold** text <script>alert('x')</script> & `code` *it* "
          "[@wilson1927; @zhu2017cyclegan].\n<!-- hidden -->\nnext line")
    out = cit.methods_html(md)
    assert "<script>" not in out and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in out
    assert "<h3>Title &lt;b&gt;</h3>" in out and "<strong>Bold</strong>" in out
    assert "<code>code</code>" in out and "<em>it</em>" in out and "&amp;" in out
    assert '<span class="citation">(Wilson, 1927; Zhu et al., 2017)</span>' in out
    assert "hidden" not in out and "[@" not in out and "next line" in out
    full = cit.methods_html(cit.methods_markdown(cfg, make_card("cyclegan"), VERSIONS))
    assert full.count("<p>") >= 6 and "[@" not in full and "<strong>Software.</strong>" in full


# --------------------------------------------------------------------------- files


def test_write_citation_writes_both_files_atomically(cfg, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = []
    real = cit.atomic_write_text
    monkeypatch.setattr(cit, "atomic_write_text",
                        lambda path, text: (calls.append(Path(path).name), real(path, text)))
    md_path, bib_path = cit.write_citation(out, cfg, [None, make_card("syndiff"),
                                                      make_card("syndiff")])
    assert (md_path, bib_path) == (out / "logs" / "CITATION.md", out / "logs" / "CITATION.bib")
    assert calls == ["CITATION.md", "CITATION.bib"]
    text = md_path.read_text(encoding="utf-8")
    assert "Several pseudo-normal PET models" in text
    assert text.count("SynDiff [@ozbey2023syndiff]") == 1 and "tissue-model baseline" in text
    bib_keys = [k for k, _ in cit.parse_bib(bib_path.read_text(encoding="utf-8"))]
    assert bib_keys == cit.cited_keys(text)
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["CITATION.bib", "CITATION.md"]
    md_path2, _ = cit.write_citation(out, cfg, [])
    assert "Several" not in md_path2.read_text(encoding="utf-8")


def test_concurrent_writes_leave_a_complete_file(cfg, tmp_path):
    out = tmp_path / "out"
    cards = [[None], [make_card("cyclegan")], [make_card("syndiff")], [None, make_card("cyclegan")]]
    expected = {cit._render(cfg, c, provenance.software_versions()) for c in cards}
    errors = []

    def job(i: int) -> None:
        try:
            for _ in range(3):
                cit.write_citation(out, cfg, cards[i % len(cards)])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    logs = out / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["CITATION.bib", "CITATION.md"]
    text = (logs / "CITATION.md").read_text(encoding="utf-8")
    assert text in expected and text.rstrip().endswith("## References")
    bib = (logs / "CITATION.bib").read_text(encoding="utf-8")
    assert all(entry.count("{") == entry.count("}") for _, entry in cit.parse_bib(bib))


def test_both_z_references_in_one_folder_are_both_described(cfg, tmp_path):
    only = cit.methods_markdown(cfg, None, {})
    assert "normative model" not in only
    md_path, _ = cit.write_citation(tmp_path, cfg, [None], ["subject", "controls"])
    text = md_path.read_text()
    assert "side by side" in text and "(i) As in the original method" in text
    assert "(ii) Instead of the within-subject" in text and "leave-one-out" in text


def test_z_references_found_in_an_output_folder(tmp_path):
    pet = tmp_path / "sub-01" / "pet"
    pet.mkdir(parents=True)
    assert cit.z_references_in_output(tmp_path) == []
    (pet / "sub-01_trc-FDG_space-T1w_desc-cycleganNormFocus_clusters.tsv").write_text("x\n")
    assert cit.z_references_in_output(tmp_path) == ["controls"]
    (pet / "sub-01_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv").write_text("x\n")
    assert cit.z_references_in_output(tmp_path) == ["controls", "subject"]
