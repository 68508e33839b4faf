"""Structure limits on the hand-written Python files that git tracks (run by scripts/test.sh).

Everywhere:
- a file has at most ``MAX_FILE_LINES`` lines: one you can read in one sitting;
- a class has at most ``MAX_CLASS_LINES`` lines (decorators to last line): past that it holds two roles;
- a module that holds code has a docstring.

In the library and the processes (``swarm/``, ``node/``, ``coordinator/``):
- no import of a private (``_underscore``) name of another first-party module: what another module
  needs is public;
- no number literal as a timeout (a ``*timeout*`` keyword, or the delay of ``wait_for``, ``wait``,
  ``join``, ``result``, ``sleep``, ``fail_after``, ``move_on_after``): a named constant or a config
  field says why it is that long. ``0`` (yield once, never wait) is not a timeout.

Generated protobuf code under ``swarm/proto/`` is exempt. Prints one line per offence, as
``path:line: what``, and exits 1 if there is any; prints nothing and exits 0 otherwise.
Usage: ``python scripts/check_structure.py`` (from anywhere inside the repository).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_FILE_LINES = 500
MAX_CLASS_LINES = 400
GENERATED = ("swarm/proto/",)
# Where the import and timeout rules hold; tests may reach into what they test and pick their bounds.
PRODUCTION = ("swarm/", "node/", "coordinator/")
FIRST_PARTY = ("swarm", "node", "coordinator", "tests", "benchmarks")
WAITS = frozenset({"wait_for", "wait", "join", "result", "sleep", "fail_after", "move_on_after"})
"""Calls whose positional number arguments are a time to wait."""


def tracked_python_files(root: Path) -> list[str]:
    """Paths (relative to ``root``, POSIX) of the tracked ``.py`` files, generated code left out."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.py"], cwd=root, capture_output=True, check=True
    ).stdout.decode()
    return sorted(p for p in listed.split("\0") if p and not p.startswith(GENERATED))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_duration(node: ast.expr) -> bool:
    """A number literal other than 0 (True and False are not numbers here)."""
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
        and node.value != 0
    )


def _literal_timeouts(call: ast.Call) -> Iterator[str]:
    for keyword in call.keywords:
        if keyword.arg is not None and "timeout" in keyword.arg and _is_duration(keyword.value):
            yield f"{keyword.arg}={ast.unparse(keyword.value)}"
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name in WAITS:
        yield from (f"{name}({ast.unparse(a)})" for a in call.args if _is_duration(a))


def offences(path: str, source: str) -> list[str]:
    """Every structure offence in one file's ``source``, one line each, in the order of the file."""
    found: list[tuple[int, str]] = []
    lines = len(source.splitlines())
    if lines > MAX_FILE_LINES:
        found.append((0, f"{path}: {lines} lines (limit {MAX_FILE_LINES})"))
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        return [line for _, line in found] + [f"{path}:{e.lineno}: does not parse: {e.msg}"]
    if tree.body and ast.get_docstring(tree) is None:
        found.append((1, f"{path}:1: no module docstring"))
    production = path.startswith(PRODUCTION)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = (node.end_lineno or node.lineno) - first + 1
            if size > MAX_CLASS_LINES:
                what = f"class {node.name} has {size} lines (limit {MAX_CLASS_LINES})"
                found.append((node.lineno, f"{path}:{node.lineno}: {what}"))
        elif not production:
            continue
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] in FIRST_PARTY
        ):
            private = [alias.name for alias in node.names if _is_private(alias.name)]
            if private:
                what = f"imports private {', '.join(private)} from {node.module}"
                found.append((node.lineno, f"{path}:{node.lineno}: {what}"))
        elif isinstance(node, ast.Call):
            for literal in _literal_timeouts(node):
                found.append((node.lineno, f"{path}:{node.lineno}: literal timeout {literal}: name it"))
    return [line for _, line in sorted(found)]


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    found = []
    for path in tracked_python_files(root):
        file = root / path
        if file.exists():  # a deletion not yet committed
            found.extend(offences(path, file.read_text(encoding="utf-8")))
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
