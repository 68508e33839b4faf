"""scripts/check_structure.py: it names each offence (file size, class size, private import) once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_structure.py"
_spec = importlib.util.spec_from_file_location("check_structure", SCRIPT)
assert _spec is not None and _spec.loader is not None
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _class(name: str, body_lines: int, decorated: bool = False) -> str:
    head = "@dataclass\n" if decorated else ""
    return head + f"class {name}:\n" + "".join(f"    x{i} = {i}\n" for i in range(body_lines))


def test_files_and_classes_within_the_limits_pass() -> None:
    source = _class("Small", check.MAX_CLASS_LINES - 1) + "\n" * (
        check.MAX_FILE_LINES - check.MAX_CLASS_LINES
    )
    assert len(source.splitlines()) == check.MAX_FILE_LINES
    assert list(check.offences("swarm/ok.py", source)) == []


def test_a_long_file_is_one_offence() -> None:
    source = "x = 1\n" * (check.MAX_FILE_LINES + 1)
    assert list(check.offences("node/long.py", source)) == [
        f"node/long.py: {check.MAX_FILE_LINES + 1} lines (limit {check.MAX_FILE_LINES})"
    ]


def test_a_long_class_counts_its_decorators_and_nested_classes_count_too() -> None:
    inner = "    " + _class("Inner", check.MAX_CLASS_LINES).replace("\n", "\n    ").rstrip() + "\n"
    source = "x = 1\n" + _class("Outer", 0, decorated=True) + inner
    found = list(check.offences("swarm/big.py", source))
    assert found == [
        f"swarm/big.py:3: class Outer has {check.MAX_CLASS_LINES + 3} lines (limit {check.MAX_CLASS_LINES})",
        f"swarm/big.py:4: class Inner has {check.MAX_CLASS_LINES + 1} lines (limit {check.MAX_CLASS_LINES})",
    ]


def test_private_names_of_other_first_party_modules_are_offences_in_production_code_only() -> None:
    source = (
        "from swarm.light.client import LightError, _Framed\n"
        "from swarm.compression.cocktail import __all__\n"
        "from torch._C import _jit\n"
    )
    assert list(check.offences("coordinator/archive_host.py", source)) == [
        "coordinator/archive_host.py:1: imports private _Framed from swarm.light.client"
    ]
    assert list(check.offences("tests/unit/test_x.py", source)) == []


def test_generated_protobuf_code_is_not_checked() -> None:
    files = check.tracked_python_files(SCRIPT.parents[1])
    assert "scripts/check_structure.py" in files
    assert not [path for path in files if path.startswith("swarm/proto/")]
