"""Structure limits on the hand-written Python files that git tracks (run by scripts/test.sh).

- a file has at most ``MAX_FILE_LINES`` lines: one you can read in one sitting;
- a class has at most ``MAX_CLASS_LINES`` lines (decorators to last line): past that it holds two roles;
- the library and the processes (``swarm/``, ``node/``, ``coordinator/``) import no private
  (``_underscore``) name of another first-party module: what another module needs is public.

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
# Where a private import across modules is an offence; tests may reach into what they test.
PRODUCTION = ("swarm/", "node/", "coordinator/")
FIRST_PARTY = ("swarm", "node", "coordinator", "tests", "benchmarks")


def tracked_python_files(root: Path) -> list[str]:
    """Paths (relative to ``root``, POSIX) of the tracked ``.py`` files, generated code left out."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.py"], cwd=root, capture_output=True, check=True
    ).stdout.decode()
    return sorted(p for p in listed.split("\0") if p and not p.startswith(GENERATED))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def offences(path: str, source: str) -> Iterator[str]:
    """Every structure offence in one file's ``source``, one line each."""
    lines = len(source.splitlines())
    if lines > MAX_FILE_LINES:
        yield f"{path}: {lines} lines (limit {MAX_FILE_LINES})"
    tree = ast.parse(source, filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = (node.end_lineno or node.lineno) - first + 1
            if size > MAX_CLASS_LINES:
                yield f"{path}:{node.lineno}: class {node.name} has {size} lines (limit {MAX_CLASS_LINES})"
        elif (
            isinstance(node, ast.ImportFrom)
            and path.startswith(PRODUCTION)
            and node.level == 0
            and (node.module or "").split(".")[0] in FIRST_PARTY
        ):
            private = [alias.name for alias in node.names if _is_private(alias.name)]
            if private:
                yield f"{path}:{node.lineno}: imports private {', '.join(private)} from {node.module}"


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
