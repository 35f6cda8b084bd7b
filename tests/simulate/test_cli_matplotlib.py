"""``pseudopet-simulate`` gives matplotlib a writable cache under a read-only root.

ANTs imports matplotlib in the simulator's workers; with its config folder and every temporary
folder read-only (a container's read-only root without a tmpfs) matplotlib stops the run. The
real case runs in scripts/container_check.sh (podman --read-only); here the decision and the
clean-up are checked with the writability probe replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pseudopet_bids.cli import environment
from pseudopet_bids.simulate import cli


def test_config_folder_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))  # made on demand in tmp_path
    assert environment.matplotlib_config_writable()
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "absent" / "deeper" / "mpl"))
    assert not environment.matplotlib_config_writable()


def test_unwritable_cache_moves_beside_out_and_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "matplotlib_config_writable", lambda: False)
    monkeypatch.setenv("MPLCONFIGDIR", "/read-only/matplotlib")
    out = tmp_path / "cohort" / "bids"
    with cli._matplotlib_cache_beside(out):
        cache = Path(os.environ["MPLCONFIGDIR"])
        assert cache.is_dir() and cache.parent == out.parent
        assert cache.name.startswith(".pseudopet-simulate-matplotlib-")
    assert not cache.exists()
    assert os.environ["MPLCONFIGDIR"] == "/read-only/matplotlib"
    assert not out.exists()  # OUT itself is left to the simulator ("new or empty")


def test_writable_cache_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "matplotlib_config_writable", lambda: True)
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    with cli._matplotlib_cache_beside(tmp_path / "bids"):
        assert "MPLCONFIGDIR" not in os.environ
    assert list(tmp_path.iterdir()) == []


def test_main_runs_the_simulation_with_the_moved_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "matplotlib_config_writable", lambda: False)
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    seen = {}

    def fake_cohort(out, *args, **kwargs):
        seen["cache"] = Path(os.environ["MPLCONFIGDIR"])
        seen["existed"] = seen["cache"].is_dir()
        return pd.DataFrame({"group": ["control"]})

    monkeypatch.setattr(cli, "simulate_cohort", fake_cohort)
    assert cli.main([str(tmp_path / "bids"), "--controls", "1", "--patients", "0", "--seed", "1",
                     "-q"]) == 0
    assert seen["existed"] and seen["cache"].parent == tmp_path
    assert not seen["cache"].exists() and "MPLCONFIGDIR" not in os.environ
