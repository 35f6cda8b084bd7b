"""Boutiques descriptor of the ``pseudopet`` command line, derived from the live parser.

The descriptor (schema 0.5, https://boutiques.github.io) is built by walking the argparse actions
of :func:`pseudopet_bids.cli.parser.build_parser`, so it cannot drift from the parser as long as
the committed copy is regenerated; ``tests/cli/test_boutiques.py`` fails when it is stale::

    python -m pseudopet_bids.cli.boutiques            # rewrite pseudopet_bids/data/boutiques/...
    python -m pseudopet_bids.cli.boutiques --check    # exit 1 with a diff when stale

Representation choices (the parts of argparse that Boutiques cannot say directly):

- Counted flags (``-v``, ``action="count"``) become a ``String`` input without a
  ``command-line-flag`` whose ``value-choices`` are the flag spelled once, twice, ... (``-v``,
  ``-vv``): the chosen string is pasted into the command line as is. A ``Number`` with a flag would
  produce ``-v 2``, which argparse rejects.
- Defaults computed from the machine (e.g. ``--omp-nthreads``, ``min(CPUs, 8)``) are found by
  building the parser with different CPU counts and an empty environment; they get no
  ``default-value`` (Boutiques would otherwise pass the generating machine's value on every run)
  and their description says how the value is computed.
- Defaults the option's own type would refuse (sentinels such as ``--train-steps 0`` = "the
  preset's") are left out too: Boutiques always writes a ``default-value`` onto the command line.
- ``--help`` and ``--version`` print and exit; they are not inputs of a run.

Like the parser, this module imports neither torch nor pybids.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any
from unittest import mock

from pseudopet_bids import __version__, errors
from pseudopet_bids.cli.parser import build_parser

#: Where the committed descriptor lives (package data, shipped in the wheel).
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "boutiques" / "pseudopet.json"
#: Informational actions: they print and exit, so they are not inputs of a run.
SKIPPED_ACTIONS = (argparse._HelpAction, argparse._VersionAction)
#: run.py returns 130 on Ctrl-C; errors.py has no constant for it (yet).
EXIT_INTERRUPTED = getattr(errors, "EXIT_INTERRUPTED", 130)
REGENERATE = "python -m pseudopet_bids.cli.boutiques"

# Suggested resources for one participant with the tissue model. docs/performance.md measured
# 40-49 s wall time and 2.2 GiB peak memory with --omp-nthreads 2 on an idle 2-core machine
# (53-77 s with the cores shared with other jobs); we suggest 90 s and 3 GB (which --mem also
# assumes per participant) to leave headroom.
SUGGESTED_RESOURCES = {"cpu-cores": 2, "ram": 3, "walltime-estimate": 90}

_ACCEPT_ERRORS = (argparse.ArgumentTypeError, ValueError, TypeError, OSError)


def descriptor(build: Callable[[], argparse.ArgumentParser] = build_parser) -> dict[str, Any]:
    """The Boutiques descriptor of the parser ``build()`` makes (default: ``pseudopet``'s).

    Parameters
    ----------
    build
        Makes the parser to describe. It is called several times, under patched CPU counts and
        environment, to find the defaults that depend on the machine.

    Returns
    -------
    dict
        A schema-0.5 descriptor, in a fixed key order (the JSON output is deterministic).

    Raises
    ------
    NotImplementedError
        For an argparse action Boutiques cannot express (e.g. ``append``), so that a new option
        fails the sync test instead of being described wrongly.
    """
    machine = _machine_dependent_defaults(build)
    parser = build()
    actions = [a for a in parser._actions if not isinstance(a, SKIPPED_ACTIONS)]
    # Positionals first: BIDS Apps' command line starts with BIDS_DIR OUTPUT_DIR LEVEL.
    actions.sort(key=lambda a: bool(a.option_strings))
    inputs = [_input(parser, a, machine.get(a.dest)) for a in actions]
    ids = [i["id"] for i in inputs]
    return {
        "name": parser.prog,
        "tool-version": __version__,
        "description": parser.description or parser.prog,
        "command-line": " ".join([parser.prog] + [i["value-key"] for i in inputs]),
        "schema-version": "0.5",
        "container-image": {"type": "docker", "image": f"pseudopet/pseudopet:{__version__}"},
        "inputs": inputs,
        "groups": _groups(parser, ids),
        "output-files": [{
            "id": "output_folder", "name": "BIDS-Derivatives output folder",
            "description": "The BIDS-Derivatives dataset written by the run (DESIGN.md section 4).",
            "path-template": "[OUTPUT_DIR]", "optional": False}],
        "error-codes": error_codes(parser.epilog or ""),
        "suggested-resources": dict(SUGGESTED_RESOURCES),
        "tags": {"domain": ["neuroimaging", "pet", "mri", "epilepsy"], "bids-app": True},
        # no "url": the project has no public code repository yet (a placeholder would be false)
    }


def error_codes(epilog: str | None = None) -> list[dict[str, Any]]:
    """Non-zero exit codes: the ``EXIT_*`` constants of errors.py, described by the epilog.

    Parameters
    ----------
    epilog
        The ``--help`` epilog with an ``exit codes:`` paragraph (default: the live parser's).

    Raises
    ------
    ValueError
        When a constant is missing from the ``exit codes:`` paragraph of ``--help`` (document
        it there) or the paragraph names a code errors.py does not define.
    """
    documented = documented_exit_codes(epilog)
    codes = {value for name, value in vars(errors).items()
             if name.startswith("EXIT_") and isinstance(value, int)}
    if codes != set(documented):
        raise ValueError(f"exit codes in errors.py {sorted(codes)} differ from those in the "
                         f"--help epilog {sorted(documented)}")
    documented.setdefault(EXIT_INTERRUPTED, "interrupted (Ctrl-C, SIGINT)")
    return [{"code": c, "description": d} for c, d in sorted(documented.items()) if c != 0]


def documented_exit_codes(epilog: str | None = None) -> dict[int, str]:
    """``{code: description}`` from the ``exit codes:`` paragraph of the parser's epilog."""
    if epilog is None:
        epilog = build_parser().epilog or ""
    paragraph = epilog.split("exit codes:", 1)[-1].split("\n\n", 1)[0]
    text = " ".join(paragraph.split()).rstrip(".")
    return {int(code): desc.strip() for code, desc in re.findall(r"(\d+) ([^,]+)", text)}


def render(desc: dict[str, Any] | None = None) -> str:
    """The descriptor as JSON text: 2-space indent, key order as built, final newline."""
    return json.dumps(desc if desc is not None else descriptor(), indent=2,
                      ensure_ascii=False) + "\n"


# --- inputs -------------------------------------------------------------------------------------

def _input(parser: argparse.ArgumentParser, action: argparse.Action,
           machine_note: str | None) -> dict[str, Any]:
    """One Boutiques input for one argparse action."""
    long_flag = _long_flag(action)
    inp: dict[str, Any] = {"id": action.dest,
                           "name": long_flag or action.dest,
                           "description": _help(parser, action, machine_note)}
    if isinstance(action, argparse._CountAction):
        letter = action.option_strings[0]
        if not re.fullmatch(r"-\w", letter):
            raise NotImplementedError(f"counted option {letter}: needs a one-letter short form")
        inp.update(type="String", value_key=_key(action),
                   choices=_count_spellings(letter, action.help or ""))
        inp["description"] += f" (the counted {'/'.join(action.option_strings)} flag: pick how " \
                               "many times it is given)"
        inp["optional"] = True
        return _ordered(inp)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        inp.update(type="Flag", value_key=_key(action), flag=long_flag, optional=True)
        return _ordered(inp)
    if type(action) not in (argparse._StoreAction, argparse._ExtendAction) or \
            action.nargs in ("?", argparse.REMAINDER, argparse.PARSER):
        raise NotImplementedError(
            f"{action.option_strings or action.dest}: {type(action).__name__} "
            f"(nargs={action.nargs!r}) has no Boutiques form; extend {__name__}")
    kind, integer = _value_type(action)
    inp.update(type=kind, value_key=_key(action))
    if action.option_strings:
        inp["flag"] = long_flag
        inp["optional"] = not action.required
    else:
        inp["optional"] = action.nargs == "*"
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        inp["list"] = True
        minimum = {"+": 1, "*": 0}.get(action.nargs, action.nargs)  # type: ignore[arg-type]
        if minimum:
            inp["min-list-entries"] = minimum
        if isinstance(action.nargs, int):
            inp["max-list-entries"] = action.nargs
    if kind == "Number":
        inp["integer"] = integer
        if not action.choices:
            inp.update(_bounds(action, integer))
    if action.choices:
        inp["choices"] = list(action.choices)
    if machine_note is None and _meaningful_default(action):
        inp["default-value"] = action.default
    return _ordered(inp)


# Human-readable key order of an input (the JSON keeps insertion order).
_ORDER = ["id", "name", "description", "type", "value_key", "flag", "optional", "list",
          "min-list-entries", "max-list-entries", "integer", "minimum", "exclusive-minimum",
          "maximum", "exclusive-maximum", "choices", "default-value"]
_SCHEMA_NAMES = {"value_key": "value-key", "flag": "command-line-flag", "choices": "value-choices"}


def _ordered(inp: dict[str, Any]) -> dict[str, Any]:
    return {_SCHEMA_NAMES.get(k, k): inp[k] for k in _ORDER if k in inp}


def _long_flag(action: argparse.Action) -> str | None:
    """The first ``--long`` spelling, else the first spelling (None for positionals)."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    return (longs or action.option_strings or [None])[0]


def _key(action: argparse.Action) -> str:
    # Brackets keep keys from containing one another ([MODEL] vs [MODEL_NAME]).
    return f"[{action.dest.upper()}]"


def _count_spellings(letter: str, help_text: str) -> list[str]:
    """``-v``, ``-vv``, ... up to the longest spelling the help text mentions (at least 2)."""
    char = letter[1]
    mentioned = re.findall(rf"(?<![\w-])-({re.escape(char)}+)(?!\w)", help_text)
    most = max([2] + [len(m) for m in mentioned])
    return ["-" + char * n for n in range(1, most + 1)]


def _help(parser: argparse.ArgumentParser, action: argparse.Action,
          machine_note: str | None) -> str:
    """The help text with ``%(...)s`` expanded as argparse does, and the aliases named."""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = parser.prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    if machine_note is not None:  # never bake the generating machine's value
        params["default"] = machine_note
    text = action.help % params if action.help else ""
    aliases = [s for s in action.option_strings if s not in (_long_flag(action), action.dest)]
    if aliases and not isinstance(action, argparse._CountAction):
        text += f" (also spelled {', '.join(aliases)})"
    if machine_note is not None and "%(default)" not in (action.help or ""):
        text += f" (default: {machine_note})"
    return text


def _accepts(action: argparse.Action, text: str) -> bool:
    try:
        (action.type or str)(text)  # type: ignore[operator]
    except _ACCEPT_ERRORS:
        return False
    return True


def _value_type(action: argparse.Action) -> tuple[str, bool]:
    """Boutiques ``type`` and ``integer`` of a value-taking action, from its argparse type."""
    conv: Any = action.type
    if conv is None:  # untyped: strings, unless the choices are numbers
        values = list(action.choices or [])
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return "Number", all(isinstance(v, int) for v in values)
        return "String", False
    result: Any = conv if isinstance(conv, type) else None
    if result is None:
        try:
            result = typing.get_type_hints(conv).get("return")
        except Exception:  # noqa: BLE001 - unresolvable hints: fall back to probing
            result = None
    if result is None:  # e.g. a lambda: look at what it makes of a sample
        for sample in ("1", "x"):
            try:
                result = type(conv(sample))
                break
            except _ACCEPT_ERRORS:
                continue
    if isinstance(result, type):
        if issubclass(result, PurePath):
            return "File", False
        if issubclass(result, bool):
            return "String", False
        if issubclass(result, int):
            return "Number", True
        if issubclass(result, float):
            return "Number", False
    return "String", False


def _bounds(action: argparse.Action, integer: bool) -> dict[str, Any]:
    """``minimum``/``maximum`` the type validator enforces, found by probing it.

    Integers: binary search for the edges of the accepted interval. Floats: only the common
    edges 0 and 1, inclusive or exclusive (positive numbers, fractions).
    """
    out: dict[str, Any] = {}
    if integer:
        start = next((v for v in (0, 1, action.default) if isinstance(v, int)
                      and _accepts(action, str(v))), None)
        if start is None:
            return out
        far = 2 ** 64
        if not _accepts(action, str(-far)):
            out["minimum"] = _edge(action, -far, start)
        if not _accepts(action, str(far)):
            out["maximum"] = _edge(action, far, start)
        return out
    eps = 1e-9
    for edge in (0, 1):
        below, at, above = (_accepts(action, repr(edge + d)) for d in (-eps, 0.0, eps))
        if not below and above:
            out.update({"minimum": edge, "exclusive-minimum": True} if not at else
                       {"minimum": edge})
        elif below and not above:
            out.update({"maximum": edge, "exclusive-maximum": True} if not at else
                       {"maximum": edge})
    return out


def _edge(action: argparse.Action, refused: int, accepted: int) -> int:
    """The accepted integer nearest to ``refused`` (interval assumed), by bisection."""
    while abs(refused - accepted) > 1:
        middle = (refused + accepted) // 2
        if _accepts(action, str(middle)):
            accepted = middle
        else:
            refused = middle
    return accepted


def _meaningful_default(action: argparse.Action) -> bool:
    """A default worth stating: set, not empty, and one the option itself would accept.

    Boutiques writes ``default-value`` onto every command line, so a sentinel the type refuses
    (``--train-steps 0`` meaning "the preset's") must stay out.
    """
    default = action.default
    if default is None or default is argparse.SUPPRESS or default == [] or default == "":
        return False
    values = default if isinstance(default, list) else [default]
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        return False
    if action.choices is not None and not all(v in action.choices for v in values):
        return False
    return all(_accepts(action, str(v)) for v in values)


# --- machine-dependent defaults -----------------------------------------------------------------

@contextmanager
def _machine(cpus: int) -> Iterator[None]:
    """Pretend to run on a machine with ``cpus`` CPUs and an empty environment."""
    patches = [mock.patch("os.cpu_count", return_value=cpus),
               mock.patch.dict(os.environ, {}, clear=True)]
    for name, value in (("sched_getaffinity", lambda pid: set(range(cpus))),
                        ("process_cpu_count", lambda: cpus)):
        if hasattr(os, name):
            patches.append(mock.patch(f"os.{name}", value))
    for patch in patches:
        patch.start()
    try:
        yield
    finally:
        for patch in reversed(patches):
            patch.stop()


def _machine_dependent_defaults(
        build: Callable[[], argparse.ArgumentParser]) -> dict[str, str]:
    """``{dest: note}`` for defaults that change with the CPU count or the environment."""
    probes = (1, 2, 4096)
    parsers = [build()]
    for cpus in probes:
        with _machine(cpus):
            parsers.append(build())
    notes: dict[str, str] = {}
    for dest in {a.dest for a in parsers[0]._actions}:
        seen = [next((a.default for a in p._actions if a.dest == dest), None) for p in parsers]
        if any(s != seen[0] for s in seen[1:]):
            notes[dest] = _machine_note(seen[1:], probes)
    return notes


def _machine_note(values: list[Any], cpus: tuple[int, ...]) -> str:
    """Words for a default that follows the CPU count (or the environment)."""
    if list(values[:2]) == list(cpus[:2]):
        if values[2] == cpus[2]:
            return "the number of CPUs of the machine that runs it"
        if isinstance(values[2], int) and values[2] < cpus[2]:
            return f"the number of CPUs of the machine that runs it, at most {values[2]}"
    return "computed on the machine that runs it (CPU count or environment)"


# --- groups -------------------------------------------------------------------------------------

def _groups(parser: argparse.ArgumentParser, ids: list[str]) -> list[dict[str, Any]]:
    """The parser's argument groups (and mutually exclusive groups) as Boutiques groups."""
    out: list[dict[str, Any]] = []
    taken = set(ids)
    containers = [(g, False) for g in parser._action_groups] + \
                 [(g, True) for g in parser._mutually_exclusive_groups]
    for index, (group, exclusive) in enumerate(containers):
        members = [a.dest for a in group._group_actions if a.dest in ids]
        if not members:
            continue
        title = getattr(group, "title", None) or f"exclusive {index}"
        slug = re.sub(r"\W+", "_", title.split("(")[0].strip().lower()).strip("_") or "group"
        gid = slug
        while gid in taken:  # group ids share the namespace of input ids
            gid += "_group"
        taken.add(gid)
        entry: dict[str, Any] = {"id": gid, "name": title}
        if getattr(group, "description", None):
            entry["description"] = group.description
        entry["members"] = members
        if exclusive:
            entry["mutually-exclusive"] = True
        out.append(entry)
    return out


# --- command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Write the descriptor JSON, or with ``--check`` compare it to the committed file.

    Returns
    -------
    int
        0 when written or up to date; 1 when ``--check`` finds the file stale.
    """
    cli = argparse.ArgumentParser(prog="python -m pseudopet_bids.cli.boutiques",
                                  description="Boutiques descriptor of the pseudopet CLI.")
    cli.add_argument("-o", "--output", type=Path, default=DEFAULT_PATH,
                     help="descriptor file (default: the package's data/boutiques/pseudopet.json)")
    cli.add_argument("--check", action="store_true",
                     help="do not write: exit 1 with a diff when the file differs from the parser")
    args = cli.parse_args(argv)
    text = render()
    if args.check:
        old = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if old == text:
            print(f"{args.output}: up to date")
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"{args.output} (committed)", tofile="live parser"))
        print(f"\n{args.output} is stale: regenerate it with `{REGENERATE}`", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.output)  # atomic, like the derivatives
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
