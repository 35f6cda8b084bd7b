"""The Boutiques descriptor stays in sync with the parser, validates, and round-trips."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
from pathlib import Path
from typing import Any

import pytest

from pseudopet_bids import errors
from pseudopet_bids.cli import boutiques
from pseudopet_bids.cli.parser import build_parser

bosh = pytest.importorskip("boutiques").bosh

STALE = f"the committed descriptor is stale: regenerate it with `{boutiques.REGENERATE}`"


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    return boutiques.descriptor()


@pytest.fixture
def no_network(monkeypatch):
    """Boutiques must work offline: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("boutiques tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _run_actions() -> list[argparse.Action]:
    return [a for a in build_parser()._actions
            if not isinstance(a, boutiques.SKIPPED_ACTIONS)]


def _by_dest() -> dict[str, argparse.Action]:
    return {a.dest: a for a in _run_actions()}


# --- (a) committed == live ----------------------------------------------------------------------

def test_committed_descriptor_is_current(live):
    assert boutiques.DEFAULT_PATH.is_file(), STALE
    assert boutiques.DEFAULT_PATH.read_text(encoding="utf-8") == boutiques.render(live), STALE


def test_check_mode(tmp_path, capsys):
    target = tmp_path / "d.json"
    assert boutiques.main(["-o", str(target)]) == 0
    assert boutiques.main(["--check", "-o", str(target)]) == 0
    target.write_text(target.read_text().replace('"pseudopet"', '"old"', 1))
    assert boutiques.main(["--check", "-o", str(target)]) == 1
    captured = capsys.readouterr()
    assert '-  "name": "old"' in captured.out and boutiques.REGENERATE in captured.err


# --- (b) every option exactly once, and nothing else --------------------------------------------

def test_every_option_once(live):
    inputs = live["inputs"]
    assert [i["id"] for i in inputs] == [a.dest for a in sorted(
        _run_actions(), key=lambda a: bool(a.option_strings))]
    flags = [i["command-line-flag"] for i in inputs if "command-line-flag" in i]
    assert len(flags) == len(set(flags))
    for action in _run_actions():
        [inp] = [i for i in inputs if i["id"] == action.dest]
        if isinstance(action, argparse._CountAction):
            assert inp["value-choices"][0] == action.option_strings[0]
        elif action.option_strings:
            assert inp["command-line-flag"] in action.option_strings
            assert inp["command-line-flag"].startswith("--")
        assert live["command-line"].count(inp["value-key"]) == 1
    # Informational actions are the only ones left out.
    left_out = {a.dest for a in build_parser()._actions} - {i["id"] for i in inputs}
    assert left_out == {"help", "version"}
    grouped = [m for g in live["groups"] if not g.get("mutually-exclusive") for m in g["members"]]
    assert sorted(grouped) == sorted(i["id"] for i in inputs)


def test_no_machine_specific_default(live):
    [omp] = [i for i in live["inputs"] if i["id"] == "omp_nthreads"]
    assert "default-value" not in omp
    assert "number of CPUs" in omp["description"] and "at most 8" in omp["description"]
    # Sentinels the option's own type refuses are not stated as defaults either.
    [steps] = [i for i in live["inputs"] if i["id"] == "train_steps"]
    assert "default-value" not in steps and steps["minimum"] == 1


def test_verbosity_is_a_choice_of_spellings(live):
    [verbose] = [i for i in live["inputs"] if i["id"] == "verbosity"]
    assert verbose["type"] == "String" and "command-line-flag" not in verbose
    assert verbose["value-choices"] == ["-v", "-vv"]


def test_environment_default_is_detected(monkeypatch):
    monkeypatch.setenv("TOY_CACHE", "/machine/specific")

    def toy() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="toy", epilog=build_parser().epilog)
        parser.add_argument("--cache", default=os.environ.get("TOY_CACHE", "/tmp"),
                            help="cache (default: %(default)s)")
        parser.add_argument("--level", type=int, default=3, help="level (default: %(default)s)")
        return parser

    cache, level = boutiques.descriptor(toy)["inputs"]
    assert "default-value" not in cache and "/machine" not in cache["description"]
    assert level["default-value"] == 3 and level["description"] == "level (default: 3)"


def test_unsupported_action_is_refused():
    def toy() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="toy")
        parser.add_argument("--tag", action="append")
        return parser

    with pytest.raises(NotImplementedError, match="--tag"):
        boutiques.descriptor(toy)


# --- (c) bosh validate --------------------------------------------------------------------------

def test_bosh_validate(tmp_path, live, no_network):
    assert bosh(["validate", str(boutiques.DEFAULT_PATH)]) is None
    path = tmp_path / "live.json"
    path.write_text(boutiques.render(live))
    assert bosh(["validate", str(path)]) is None


# --- (d) round trip: invocation -> bosh command line -> our parser ------------------------------

def _sample(inp: dict[str, Any], action: argparse.Action, tmp: Path) -> Any:
    """A valid, non-default value for ``inp`` (what a user could put in an invocation)."""
    if inp["type"] == "Flag":
        return True
    if "value-choices" in inp:
        value = next(c for c in reversed(inp["value-choices"]) if c != inp.get("default-value"))
    elif inp["type"] == "Number":
        low = inp.get("minimum", 0)
        value = low + 1 if inp["integer"] else low + 0.25  # bounds are inclusive for integers
        if "maximum" in inp and value >= inp["maximum"]:
            value = low if inp["integer"] else (low + inp["maximum"]) / 2
    else:  # String / File: the first candidate the option's type accepts
        folder, file = tmp / "folder", tmp / "file.json"
        folder.mkdir(exist_ok=True)
        file.write_text("{}")
        candidates = [str(file), str(folder)] if inp["type"] == "File" else \
            ["01", "tissue", "cpu", f"prep={folder}", str(folder)]
        value = next((c for c in candidates if boutiques._accepts(action, c)), None)
        assert value is not None, f"add a sample value for {inp['id']} to this test"
    return [value] if inp.get("list") else value


def _expected(action: argparse.Action, value: Any) -> Any:
    """What the parser should make of an invocation value."""
    if isinstance(action, argparse._CountAction):
        return len(value) - 1
    if action.nargs == 0:  # store_true / store_false
        return action.const
    convert = action.type or (lambda text: text)
    if isinstance(value, list):
        return [convert(str(v)) for v in value]
    return convert(str(value))


def _roundtrip(desc_path: Path, tmp: Path, invocation: dict[str, Any], name: str):
    inv = tmp / f"{name}.json"
    inv.write_text(json.dumps(invocation))
    out = bosh(["exec", "simulate", str(desc_path), "-i", str(inv)])
    command = shlex.split(out.stdout.strip().splitlines()[-1])
    assert command[0] == "pseudopet"
    return build_parser().parse_args(command[1:])


def test_roundtrip(tmp_path, live, no_network, capsys):
    desc_path = tmp_path / "pseudopet.json"
    desc_path.write_text(boutiques.render(live))
    bids, out = tmp_path / "bids dir", tmp_path / "out"
    bids.mkdir()
    filters = tmp_path / "filters.json"
    filters.write_text("{}")
    prep = tmp_path / "smriprep"
    prep.mkdir()
    actions = _by_dest()
    types = {i["id"]: i["type"] for i in live["inputs"]}
    positional = {"bids_dir": str(bids), "output_dir": str(out), "analysis_level": "participant"}

    # Minimal: Boutiques adds each default-value; the result must be the parser's own defaults.
    parsed = _roundtrip(desc_path, tmp_path, positional, "minimal")
    assert vars(parsed) == vars(build_parser().parse_args(list(positional.values())))

    # Hand-picked: several list entries, a label with 'sub-', a NAME=PATH list, numbers.
    picked = {**positional, "analysis_level": "group", "verbosity": "-vv",
              "participant_label": ["sub-01", "02", "abc"], "session_label": ["pre"],
              "derivatives": [f"smriprep={prep}", str(prep)], "bids_filter_file": str(filters),
              "skip_bids_validation": True, "nprocs": 3, "mem_gb": 7.5, "device": "cuda:1",
              "model": "syndiff", "seed": 4294967295, "connectivity": 18, "train": True,
              "preset": "tiny", "z_threshold": 2.33, "cluster_min_volume": 250}
    # Every input, each with a valid non-default value.
    everything = {i["id"]: _sample(i, actions[i["id"]], tmp_path) for i in live["inputs"]}
    everything.update(positional)
    for name, invocation in (("picked", picked), ("everything", everything),
                             *((f"v{n}", {**positional, "verbosity": "-" + "v" * n})
                               for n in (1, 2))):
        parsed = _roundtrip(desc_path, tmp_path, invocation, name)
        for key, value in invocation.items():
            assert getattr(parsed, key) == _expected(actions[key], value), (name, key)
            if types[key] == "Number":  # numbers come back as given, not just as converted
                assert getattr(parsed, key) == value, (name, key)
        if name == "picked":
            assert parsed.participant_label == ["01", "02", "abc"] and parsed.verbosity == 2
            assert parsed.derivatives == [f"smriprep={prep.resolve()}", str(prep.resolve())]
            assert parsed.bids_dir == bids.resolve() and parsed.train is True
    capsys.readouterr()  # bosh prints the generated commands


# --- (e) exit codes -----------------------------------------------------------------------------

def test_error_codes(live):
    constants = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    documented = boutiques.documented_exit_codes()
    assert set(documented) == constants
    assert documented[errors.EXIT_USAGE].startswith("usage error")
    described = {e["code"]: e["description"] for e in live["error-codes"]}
    assert set(described) == (constants - {errors.EXIT_OK}) | {boutiques.EXIT_INTERRUPTED}
    for code, text in documented.items():
        assert code == 0 or described[code] == text
    run_source = (Path(boutiques.__file__).parent / "run.py").read_text()
    assert f"return {boutiques.EXIT_INTERRUPTED}" in run_source or \
        "EXIT_INTERRUPTED" in run_source
