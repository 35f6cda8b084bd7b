"""Exit codes: the same in the code, README, ``--help`` and the Boutiques descriptor, and the
cases the README names behave as documented."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from pseudopet_bids import errors
from pseudopet_bids.cli import boutiques
from pseudopet_bids.cli.run import main
from tests.conftest import make_bids

ROOT = Path(__file__).resolve().parents[2]


def readme_exit_codes() -> dict[int, str]:
    """``{code: text}`` of the README's "Exit codes" paragraph (items separated by " · ")."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1].split("\n\n", 1)[0]
    paragraph = " ".join(section.splitlines()[1:])
    return {int(m.group(1)): m.group(2) for m in
            (re.match(r"`(\d+)`\s+(.*)", item.strip()) for item in paragraph.split(" · "))
            if m}


def test_readme_help_and_descriptor_agree():
    constants = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    readme = readme_exit_codes()
    assert set(readme) == constants == set(boutiques.documented_exit_codes())
    committed = json.loads(boutiques.DEFAULT_PATH.read_text())
    described = {e["code"]: e["description"] for e in committed["error-codes"]}
    # the two cases issue 14 found disagreeing, named in all three places
    for code, words in ((errors.EXIT_NO_INPUT, "--model"),
                        (errors.EXIT_NO_SELECTION, "filter file"),
                        (errors.EXIT_USAGE, "--device cuda")):
        assert words in readme[code] and words in described[code], (code, words)
        assert words in boutiques.documented_exit_codes()[code]


@pytest.fixture
def dataset(tmp_path):
    return make_bids(tmp_path / "ds", {"01": {}, "02": {}})


def test_model_without_trained_model_is_missing_input(dataset, tmp_path, caplog):
    out = tmp_path / "out"
    code = main([str(dataset), str(out), "participant", "--skip-bids-validation",
                 "--model", "syndiff"])
    assert code == errors.EXIT_NO_INPUT == 66
    assert "no trained model in" in caplog.text and "train one first" in caplog.text
    assert not out.exists()  # refused before any output


def test_filter_matching_no_pet_selects_nothing(dataset, tmp_path, caplog):
    filters = tmp_path / "filter.json"
    filters.write_text(json.dumps({"pet": {"reconstruction": "nomatch"}}))
    out = tmp_path / "out"
    code = main([str(dataset), str(out), "participant", "--skip-bids-validation",
                 "--bids-filter-file", str(filters)])
    assert code == errors.EXIT_NO_SELECTION == 18
    assert "no PET image matches the filter file" in caplog.text
    assert not out.exists()


def test_no_pet_at_all_is_missing_input(tmp_path, caplog):
    root = make_bids(tmp_path / "ds", {"01": {"pet": None}})
    filters = tmp_path / "filter.json"
    filters.write_text(json.dumps({"pet": {"reconstruction": "nomatch"}}))
    # the filter is not what left the participant without a PET: 66, not 18
    assert main([str(root), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--bids-filter-file", str(filters)]) == errors.EXIT_NO_INPUT


def test_cuda_without_gpu_is_refused_whatever_the_model(dataset, tmp_path, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    out = tmp_path / "out"
    code = main([str(dataset), str(out), "participant", "--skip-bids-validation",
                 "--model", "tissue", "--device", "cuda"])
    assert code == errors.EXIT_USAGE
    assert "no CUDA GPU is available" in caplog.text
    assert not out.exists()


def test_auto_model_choice_said_once(tmp_path, caplog):
    from pseudopet_bids.synthesis.select import choose_model

    caplog.set_level(logging.INFO)
    choose_model(tmp_path, "auto")
    for _ in range(3):  # what each participant does again
        choose_model(tmp_path, "auto", announce=False)
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in infos] == \
        [f"no trained model in {tmp_path / 'models'}: using the tissue baseline"]
