"""scripts/check_structure.py: it names each offence (file or class size, missing module docstring,
private import, literal timeout) once, with its line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_structure.py"
_spec = importlib.util.spec_from_file_location("check_structure", SCRIPT)
assert _spec is not None and _spec.loader is not None
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


DOC = '"""A module."""\n'


def _class(name: str, body_lines: int, decorated: bool = False) -> str:
    head = "@dataclass\n" if decorated else ""
    return head + f"class {name}:\n" + "".join(f"    x{i} = {i}\n" for i in range(body_lines))


def test_files_and_classes_within_the_limits_pass() -> None:
    source = (
        DOC
        + _class("Small", check.MAX_CLASS_LINES - 1)
        + "\n" * (check.MAX_FILE_LINES - check.MAX_CLASS_LINES - 1)
    )
    assert len(source.splitlines()) == check.MAX_FILE_LINES
    assert check.offences("swarm/ok.py", source) == []


def test_a_long_file_is_one_offence() -> None:
    source = DOC + "x = 1\n" * check.MAX_FILE_LINES
    assert check.offences("node/long.py", source) == [
        f"node/long.py: {check.MAX_FILE_LINES + 1} lines (limit {check.MAX_FILE_LINES})"
    ]


def test_a_long_class_counts_its_decorators_and_nested_classes_count_too() -> None:
    inner = "    " + _class("Inner", check.MAX_CLASS_LINES).replace("\n", "\n    ").rstrip() + "\n"
    source = DOC + _class("Outer", 0, decorated=True) + inner
    found = check.offences("swarm/big.py", source)
    assert found == [
        f"swarm/big.py:3: class Outer has {check.MAX_CLASS_LINES + 3} lines (limit {check.MAX_CLASS_LINES})",
        f"swarm/big.py:4: class Inner has {check.MAX_CLASS_LINES + 1} lines (limit {check.MAX_CLASS_LINES})",
    ]


def test_private_names_of_other_first_party_modules_are_offences_in_production_code_only() -> None:
    source = DOC + (
        "from swarm.light.client import LightError, _Framed\n"
        "from swarm.compression.cocktail import __all__\n"
        "from torch._C import _jit\n"
    )
    assert check.offences("coordinator/archive_host.py", source) == [
        "coordinator/archive_host.py:2: imports private _Framed from swarm.light.client"
    ]
    assert check.offences("tests/unit/test_x.py", source) == []


def test_a_module_with_code_needs_a_docstring_and_an_empty_one_does_not() -> None:
    assert check.offences("tests/x.py", "import os\n") == ["tests/x.py:1: no module docstring"]
    assert check.offences("swarm/__init__.py", "") == []


def test_number_literals_as_timeouts_are_offences_in_production_code_only() -> None:
    source = DOC + (
        "async def f(stream, host, config):\n"
        "    await asyncio.wait_for(stream.read(), 5.0)\n"
        "    await host.fetch(connect_timeout_s=5, timeout_s=config.fetch_timeout_s)\n"
        "    await asyncio.sleep(0)\n"
        "    thread.join(timeout=JOIN_TIMEOUT_S)\n"
        "    await trio.sleep(0.5)\n"
        "    process.wait(True)\n"
    )
    assert check.offences("node/x.py", source) == [
        "node/x.py:3: literal timeout wait_for(5.0): name it",
        "node/x.py:4: literal timeout connect_timeout_s=5: name it",
        "node/x.py:7: literal timeout sleep(0.5): name it",
    ]
    assert check.offences("benchmarks/x.py", source) == []


def test_a_file_that_does_not_parse_is_one_offence() -> None:
    (found,) = check.offences("node/x.py", DOC + "<<<<<<< HEAD\n")
    assert found.startswith("node/x.py:2: does not parse: ")


def test_generated_protobuf_code_is_not_checked() -> None:
    files = check.tracked_python_files(SCRIPT.parents[1])
    assert "scripts/check_structure.py" in files
    assert not [path for path in files if path.startswith("swarm/proto/")]
