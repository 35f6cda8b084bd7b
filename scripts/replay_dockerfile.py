#!/usr/bin/env python3
"""Replay a Dockerfile's Python install steps in a fresh virtual environment, without Docker.

Where no Docker engine is available (this project's CI), this proves the part of the build that
breaks with the code: the COPY steps (filtered by ``.dockerignore``), the ``pip install`` steps
with their pins and constraints, and the build-time checks run inside the image's venv; then it
smoke-tests the result (ENTRYPOINT, ``--version``, ``--help``, imports, pins).

* A RUN step is replayed when every ``&&``-joined command runs from the image's venv
  (``python``, ``pip``, a console script such as ``pseudopet``). ``python3.X -m venv DIR`` stands
  for the venv itself, which the replay makes with the host's Python (``--python``).
* ``# replay: skip <reason>`` in the comments above a RUN reports it as not replayed, with the
  reason. So are steps whose commands are known OS tools (apt-get, useradd, ...). Any other
  step that cannot be replayed is an error: nothing is dropped silently.
* Absolute container paths are mapped into a scratch "root" (COPY destinations, WORKDIR, paths
  in ENV), and the image's venv onto the replay venv. pip's ``--no-cache-dir`` is dropped unless
  ``--exact-pip-args`` (the cache changes nothing that gets installed, only the time).
* pip uses the host's configuration: where a local wheel index serves torch (e.g. the CPU build),
  the replay gets that build of the same pinned version; a note says so.

Exit status: 0 all replayed steps and checks passed, 1 something failed, 2 usage or parse error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_MARKER = re.compile(r"^#\s*replay:\s*skip\b\s*(?P<reason>.*)$")
#: Commands that only make sense on the image's OS: their steps are reported, not replayed.
OS_TOOLS = {"apt-get", "apt", "dpkg", "add-apt-repository", "useradd", "userdel", "groupadd",
            "usermod", "chmod", "chown", "mkdir", "rm", "ln", "cp", "mv", "curl", "wget", "install",
            "echo", "if", ".", "source", "ldconfig", "update-alternatives", "tar", "sed"}
PYTHON_NAME = re.compile(r"^(python|pip)(3(\.\d+)?)?$")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Docker's
META = {"LABEL", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL", "ENTRYPOINT", "CMD", "USER", "SHELL",
        "VOLUME", "MAINTAINER", "ONBUILD"}
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-+])(?P<word>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_]\w*))")


class ReplayError(Exception):
    """The Dockerfile cannot be replayed as written (exit status 2)."""


@dataclass
class Instruction:
    """One Dockerfile instruction: keyword, argument text (continuations joined), comments."""

    keyword: str
    value: str
    line: int
    comments: list[str] = field(default_factory=list)

    @property
    def skip_reason(self) -> str | None:
        """The reason of a ``# replay: skip`` marker above the instruction, if any."""
        for comment in self.comments:
            match = SKIP_MARKER.match(comment)
            if match:  # "(reason)" or "reason"
                return re.sub(r"^\((.*)\)$", r"\1", match.group("reason").strip()) or "skip"
        return None


@dataclass
class Step:
    """What the replay does with one instruction."""

    instruction: Instruction
    action: str  # "run", "venv", "copy", "env", "meta", "skip"
    detail: str = ""
    commands: list[list[str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: continuations joined, comment lines kept per instruction.

    As Docker does, comment and blank lines inside a continued instruction are dropped, and the
    escape character (``\\``, or the ``# escape=`` parser directive) before a newline joins lines.
    """
    lines = text.splitlines()
    escape = "\\"
    for line in lines:  # parser directives: leading "# key=value" comments only
        match = re.match(r"^#\s*(\w+)\s*=\s*(\S+)\s*$", line)
        if not match:
            break
        if match.group(1).lower() == "escape":
            escape = match.group(2)
    out: list[Instruction] = []
    comments: list[str] = []
    i = 0  # next line to read
    while i < len(lines):
        stripped = lines[i].strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            comments += [stripped] if stripped else []
            continue
        start, parts, body = i, [], lines[i - 1].rstrip()
        while body.endswith(escape):
            parts.append(body[:-len(escape)])
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1  # comments and blank lines inside a continuation
            body = lines[i].rstrip() if i < len(lines) else ""
            i += 1
        joined = "".join(parts + [body]).strip()
        keyword, value = (joined.split(None, 1) + [""])[:2]
        if re.search(r"<<-?['\"]?[A-Z_]+\b", value) and keyword.upper() in ("RUN", "COPY"):
            raise ReplayError(f"line {start}: heredocs are not supported by the replay")
        out.append(Instruction(keyword.upper(), value.strip(), start, comments))
        comments = []
    return out


def expand(text: str, env: dict[str, str]) -> str:
    """Expand ``$NAME``, ``${NAME}``, ``${NAME:-word}``, ``${NAME:+word}`` outside single quotes."""
    out, quote, i = [], None, 0
    while i < len(text):
        char = text[i]
        if char == "\\" and quote != "'":  # an escaped character stays as it is
            out.append(text[i:i + 2])
            i += 2
            continue
        if char in "'\"" and quote in (None, char):
            quote = None if quote == char else char
        elif char == "$" and quote != "'":
            match = _VAR.match(text, i)
            if match:
                name = match.group("braced") or match.group("plain")
                value, op = env.get(name), match.group("op")
                if op in ("-", ":-"):
                    value = value if value or (op == "-" and value is not None) \
                        else expand(match.group("word"), env)
                elif op in ("+", ":+"):
                    value = expand(match.group("word"), env) if value else ""
                out.append(value or "")
                i = match.end()
                continue
        out.append(char)
        i += 1
    return "".join(out)


def _words(value: str, env: dict[str, str]) -> list[str]:
    """Docker word splitting of an instruction argument, after variable expansion."""
    if re.match(r"^\[\s*\"", value):  # exec (JSON) form: no expansion, as Docker does
        return [str(w) for w in json.loads(value)]
    return shlex.split(expand(value, env))


def _env_pairs(value: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """``ENV``/``ARG``/``LABEL`` pairs: ``K=V ...`` or the legacy ``K V`` form."""
    words = _words(value, env)
    if words and "=" not in words[0]:
        name, _, rest = value.partition(" ")
        return [(name, expand(rest.strip(), env).strip("\"'"))] if rest.strip() else [(name, "")]
    return [tuple(w.split("=", 1)) if "=" in w else (w, "") for w in words]  # type: ignore[misc]


def _shell_commands(instruction: Instruction, env: dict[str, str]) -> tuple[list[list[str]], str]:
    """A RUN's commands, split at shell operators; and the first operator other than ``&&``."""
    if re.match(r"^\[\s*\"", instruction.value):
        return [_words(instruction.value, env)], ""
    lexer = shlex.shlex(expand(instruction.value, env), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    other = ""
    for token in lexer:
        if token and set(token) <= set("();<>|&"):
            other = other or ("" if token == "&&" else token)
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c], other


def plan(instructions: list[Instruction], build_args: dict[str, str] | None = None) -> list[Step]:
    """Classify every instruction and expand its variables as ``docker build`` would."""
    build_args = dict(build_args or {})
    global_args: dict[str, str] = {}
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    workdir, steps, stages = "/", [], 0
    for ins in instructions:
        key = ins.keyword
        if key == "ARG":
            for name, default in _env_pairs(ins.value, {**global_args, **env}):
                value = build_args.get(name, default if default else global_args.get(name, ""))
                (global_args if stages == 0 else env)[name] = value
            steps.append(Step(ins, "env", "build argument"))
        elif key == "FROM":
            stages += 1
            if stages > 1:
                raise ReplayError(f"line {ins.line}: multi-stage builds are not supported")
            steps.append(Step(ins, "skip", f"base image {expand(ins.value, global_args)} "
                                           "(needs a Docker engine)"))
        elif stages == 0:
            raise ReplayError(f"line {ins.line}: {key} before FROM")
        elif key == "ENV":
            env.update(_env_pairs(ins.value, env))
            steps.append(Step(ins, "env", "environment"))
        elif key == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, expand(ins.value, env)))
            steps.append(Step(ins, "env", "working directory"))
        elif key == "COPY":
            words = _words(ins.value, env)  # flags (--chown, --chmod, --link) do not matter here
            steps.append(Step(ins, "skip", "COPY --from another image or stage")
                         if any(w.startswith("--from") for w in words) else
                         Step(ins, "copy", "", [[w for w in words if not w.startswith("--")]]))
        elif key == "RUN":
            steps.append(_plan_run(ins, env))
        elif key in META:
            steps.append(Step(ins, "meta", "image metadata"))
        else:  # ADD and anything newer: reported, never guessed at
            steps.append(Step(ins, "skip", f"{key} is not replayed"))
        steps[-1].env, steps[-1].workdir = dict(env), workdir  # the state after this step
    return steps


def _plan_run(ins: Instruction, env: dict[str, str]) -> Step:
    """A RUN: skipped (marker, OS tools), the venv's creation, or venv commands to replay."""
    if ins.skip_reason:
        return Step(ins, "skip", ins.skip_reason)
    commands, operator = _shell_commands(ins, env)
    os_tools = sorted({next((w for w in c if "=" not in w), "") for c in commands} & OS_TOOLS)
    if os_tools:
        return Step(ins, "skip", "OS-level step (" + ", ".join(os_tools) + ")")
    venv = env.get("VIRTUAL_ENV", "").rstrip("/")
    foreign = [c[0] for c in commands if "/" in c[0] and not (venv and c[0].startswith(venv))]
    if operator or foreign:
        what = f"shell operator {operator!r}" if operator else f"{foreign[0]} (not in the venv)"
        raise ReplayError(f"line {ins.line}: RUN with {what}: split it, or mark it "
                          "'# replay: skip <reason>'")
    if any(PYTHON_NAME.match(c[0]) and c[1:3] == ["-m", "venv"] for c in commands):
        if len(commands) > 1:
            raise ReplayError(f"line {ins.line}: make the venv in a RUN of its own")
        return Step(ins, "venv", "", commands)
    return Step(ins, "run", "", commands)


def _glob_regex(pattern: str) -> str:
    """Go ``filepath.Match`` syntax plus ``**`` (what ``.dockerignore`` uses) as a regex."""
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return "".join(table[t] if t in table else "[" + re.sub(r"^[!^]", "^", t[1:-1]) + "]"
                   if len(t) > 2 and t[0] == "[" else re.escape(t)
                   for t in re.findall(r"\*\*/|\*\*|\*|\?|\[[^\]]+\]|.", pattern, re.S))


def dockerignore_patterns(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """``.dockerignore`` as (exclude?, regex) pairs; the last matching pattern wins."""
    path = context / ".dockerignore"
    lines = [ln.strip() for ln in (path.read_text().splitlines() if path.is_file() else [])]
    return [(not ln.startswith("!"), re.compile("^" + _glob_regex(
        os.path.normpath(ln.lstrip("!").strip().lstrip("/"))) + "$"))
        for ln in lines if ln and not ln.startswith("#")]


def ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether ``rel`` (context-relative, ``/``-separated) is left out of the build context."""
    parts, state = rel.split("/"), False
    for exclude, regex in rules:  # a pattern matching a parent folder matches its content too
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            state = exclude
    return state


class Replayer:
    """Run a plan: stage COPY sources under ``root``, run venv commands in ``venv``."""

    def __init__(self, context: Path, root: Path, venv: Path, exact_pip_args: bool) -> None:
        self.context, self.root, self.venv = context, root, venv
        self.exact_pip_args = exact_pip_args
        self.rules = dockerignore_patterns(context)
        self.prefixes: set[str] = set()  # container folders that live under root
        self.image_venv = ""

    def map_path(self, word: str) -> str:
        """Container path → replay path (also inside ``--opt=PATH`` and ``PATH[extra]``)."""
        opt, eq, val = word.partition("=") if word.startswith("-") else ("", "", word)
        mapping = [(p, str(self.root) + p) for p in self.prefixes]
        if self.image_venv:
            mapping.append((self.image_venv, str(self.venv)))
        for prefix, target in sorted(mapping, key=lambda m: -len(m[0])):
            if val == prefix or val.startswith((prefix + "/", prefix + "[")):
                return opt + eq + target + val[len(prefix):]
        return word

    def environment(self, step: Step) -> dict[str, str]:
        """The host's environment with the step's ENV/ARG values, container paths mapped."""
        for name, value in step.env.items():  # folders named in ENV belong to the image's tree
            if value.startswith("/") and value != "/" and name not in ("PATH", "HOME",
                                                                       "VIRTUAL_ENV"):
                self.prefixes.add(os.path.normpath(value))
        env = dict(os.environ)
        for name, value in step.env.items():
            if name not in ("PATH", "HOME"):  # host PATH after the venv; host HOME (pip cache)
                env[name] = self.map_path(value)
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = str(self.venv / "bin") + os.pathsep + os.environ.get("PATH", "")
        env.pop("PYTHONHOME", None)
        return env

    def copy(self, step: Step) -> str:
        """COPY: the sources (less what ``.dockerignore`` excludes) into ``root``."""
        *sources, dest = step.commands[0]
        dest_abs = os.path.normpath(os.path.join(step.workdir, dest))
        into_dir = dest.endswith("/") or len(sources) > 1
        self.prefixes.add(dest_abs if into_dir else os.path.dirname(dest_abs))
        target, copied = Path(str(self.root) + dest_abs), 0
        for source in sources:
            found = sorted(self.context.glob(source)) if any(c in source for c in "*?[") \
                else [self.context / source]
            found = [m for m in found if m.exists()
                     and not ignored(m.relative_to(self.context).as_posix(), self.rules)]
            if not found:
                raise RuntimeError(f"COPY source {source!r} is missing or excluded by "
                                   ".dockerignore")
            for src in found:  # a folder's content goes into dest, as Docker does
                files = [src] if src.is_file() else sorted(p for p in src.rglob("*")
                                                           if p.is_file())
                for path in files:
                    if ignored(path.relative_to(self.context).as_posix(), self.rules):
                        continue
                    dst = (target / src.name if into_dir else target) if src.is_file() \
                        else target / path.relative_to(src)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dst)
                    copied += 1
        return f"{copied} file(s) into {dest_abs}"

    def run(self, step: Step) -> None:
        """RUN: each command from the venv's bin, in the mapped working directory."""
        env = self.environment(step)
        cwd = Path(str(self.root) + step.workdir)
        cwd.mkdir(parents=True, exist_ok=True)
        for cmd in step.commands:
            exe = self.venv / "bin" / Path(self.map_path(cmd[0])).name
            if not exe.is_file():
                raise RuntimeError(f"{cmd[0]} is not in the venv (an OS-level command: mark the "
                                   "step '# replay: skip <reason>')")
            args = [self.map_path(a) for a in cmd[1:]]
            if not self.exact_pip_args and "install" in args[:3]:
                args = [a for a in args if a != "--no-cache-dir"]
            print(f"      $ {exe.name} {shlex.join(args)}"[:240], flush=True)
            code = subprocess.run([str(exe), *args], cwd=cwd, env=env).returncode
            if code:
                raise RuntimeError(f"{exe.name} exited with {code}")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_pins(steps: list[Step], rep: Replayer) -> dict[str, str] | None:
    """``name → version`` of the first constraints file a replayed command used."""
    for cmd in (c for s in steps if s.action == "run" for c in s.commands):
        for arg, nxt in zip(cmd, cmd[1:] + [""]):
            path = arg.split("=", 1)[1] if arg.startswith("--constraint=") else (
                nxt if arg in ("-c", "--constraint") else "")
            if path:
                return {_canonical(m[1]): m[2] for m in re.finditer(
                    r"^\s*([\w.\-]+)\s*==\s*(\S+)", Path(rep.map_path(path)).read_text(), re.M)}
    return None


def smoke_checks(steps: list[Step], rep: Replayer) -> list[str]:
    """Checks of the finished venv; returns the failures (empty: all passed)."""
    env, bin_dir, failures = rep.environment(steps[-1]), rep.venv / "bin", []

    def check(label: str, ok: bool, shown: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'}  {label}: {shown[:90]}")
        failures.extend([] if ok else [f"{label}: {shown}"])

    def run(*argv: object) -> tuple[bool, str]:
        if not Path(str(argv[0])).is_file():
            return False, f"{argv[0]} does not exist"
        proc = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True)
        text = (proc.stdout.strip() or proc.stderr.strip()) if proc.returncode == 0 else \
            f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"
        return proc.returncode == 0, text

    entry = next((s for s in steps if s.instruction.keyword == "ENTRYPOINT"), None)
    exe = bin_dir / (_words(entry.instruction.value, {})[0] if entry else "(no ENTRYPOINT)")
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    ok, text = run(exe, "--version")
    check(f"ENTRYPOINT {exe.name} --version", ok and bool(version) and version[1] in text, text)
    ok, text = run(exe, "--help")
    check(f"ENTRYPOINT {exe.name} --help", ok and "usage" in text, text.splitlines()[0])
    ok, text = run(bin_dir / "python", "-c", "import torch, ants, deepbet, nibabel, bids")
    check("import torch, ants, deepbet, nibabel, bids", ok, text or "ok")
    ok, text = run(bin_dir / "python", "-m", "pip", "list", "--format", "json")
    installed = {_canonical(d["name"]): d["version"] for d in json.loads(text if ok else "[]")}
    torch_pin = next((a.split("==")[1] for s in steps if s.action == "run" for c in s.commands
                      for a in c if a.startswith("torch==")), None)
    got = installed.get("torch", "missing")
    check("torch at the Dockerfile's pin", got.split("+")[0] == torch_pin,
          f"{got} (pin {torch_pin})")
    if "+" in got:
        print(f"  note  pip took the local '+{got.split('+')[1]}' wheel of torch {torch_pin} "
              "(this machine's pip configuration); the image gets the CUDA build from PyPI")
    pins = constraint_pins(steps, rep)
    if pins is not None:
        loose = [n for n in installed if n not in pins and n not in ("pseudopet", "torch")
                 and not n.startswith(("nvidia-", "cuda-", "triton"))]
        wrong = [f"{n}=={v} (pin {pins[n]})" for n, v in installed.items()
                 if n in pins and v != pins[n]]
        check(f"{len(installed)} packages at their constraint pins", not loose and not wrong,
              "; ".join(filter(None, ("not pinned: " * bool(loose) + ", ".join(sorted(loose)),
                                      ", ".join(sorted(wrong))))) or f"{len(pins)} pins")
    return failures


def _replay(steps: list[Step], rep: Replayer, python: str, plan_only: bool) -> list[str]:
    """Walk the plan in order, printing each step; returns the failures."""
    for step in steps:
        ins, t0 = step.instruction, time.monotonic()
        head = f"[{ins.line:3d}] {ins.keyword} {' '.join(ins.value.split())}"[:70]
        if step.action == "skip":
            print(f"{head:<71} not replayed: {step.detail}")
            continue
        if step.action in ("env", "meta") or plan_only:
            print(f"{head:<71} {step.action if step.action in ('env', 'meta') else 'to replay'}")
            continue
        print(f"{head:<71} replaying", flush=True)
        try:
            if step.action == "venv":
                rep.image_venv = os.path.normpath(step.commands[0][-1])
                if not (rep.venv / "pyvenv.cfg").is_file():
                    subprocess.run([python, "-m", "venv", str(rep.venv)], check=True)
                detail = f"as {rep.venv}, made with {python}"
            elif step.action == "copy":
                detail = rep.copy(step)
            else:
                rep.run(step)
                detail = "ok"
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            print(f"{'':<71} FAILED: {exc}")
            return [f"line {ins.line}: {exc}"]
        print(f"{'':<71} replayed: {detail} ({time.monotonic() - t0:.0f} s)", flush=True)
    return []


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: parse, plan, replay, check; returns the exit status."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--dockerfile", type=Path, default=REPO / "Dockerfile")
    ap.add_argument("--context", type=Path, help="default: the Dockerfile's folder")
    ap.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--python", default=sys.executable, help="makes the venv (default: this)")
    ap.add_argument("--venv", type=Path, help="make (or reuse) the venv here, and keep it")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--exact-pip-args", action="store_true", help="keep pip's --no-cache-dir")
    ap.add_argument("--plan", action="store_true", help="print the plan, install nothing")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    try:
        steps = plan(parse_dockerfile(args.dockerfile.read_text()),
                     dict(a.split("=", 1) for a in args.build_arg))
        if not any(s.action == "venv" for s in steps):
            raise ReplayError("the Dockerfile makes no venv (python -m venv DIR): the replay "
                              "models the image's Python environment as one")
    except (ReplayError, ValueError, OSError) as exc:
        print(f"replay_dockerfile: {exc}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="replay-dockerfile-"))
    venv = args.venv.resolve() if args.venv else scratch / "venv"
    context = (args.context or args.dockerfile.parent).resolve()
    rep = Replayer(context, scratch / "root", venv, args.exact_pip_args)
    failures: list[str] = ["interrupted"]
    try:
        failures = _replay(steps, rep, args.python, args.plan)
        if not failures and not args.plan:
            print("smoke checks:")
            failures = smoke_checks(steps, rep)
    finally:
        if args.keep or (failures and not args.plan):
            print(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    outcome = "plan only" if args.plan else "FAILED" if failures else "passed"
    print(f"replay {outcome} in {time.monotonic() - t_start:.0f} s")
    for failure in failures:
        print(f"  - {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
