"""Nothing below ``workflows/`` imports ``workflows`` or ``cli`` (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pseudopet_bids"
#: Command-line entry points: they sit at the top, beside ``cli/``.
ENTRY_POINTS = {"__main__.py", "simulate/cli.py"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, node.module)]
            if node.module == "pseudopet_bids":
                found += [(node.lineno, f"pseudopet_bids.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def test_nothing_below_the_workflows_imports_them_or_the_cli():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("cli/", "workflows/")) or rel in ENTRY_POINTS:
            continue
        upward += [f"{rel}:{line} imports {name}" for line, name in _imports(path)
                   if name.startswith(("pseudopet_bids.workflows", "pseudopet_bids.cli"))]
    assert not upward, "\n".join(upward)
