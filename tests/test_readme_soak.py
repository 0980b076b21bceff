"""The README's "Performance and reliability" section: every command it names is one that
`make soak` runs, takes the options the section shows, and the tests it names exist."""

import importlib
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section() -> str:
    start = README.index("## Performance and reliability\n")
    return README[start:README.index("\n## ", start + 1)]


def test_each_command_is_run_by_make_soak_and_takes_the_options_shown():
    commands = re.findall(r"`python -m (tests\.soak\.\w+)([^`]*)`", section())
    assert {module for module, _ in commands} == {"tests.soak.faults", "tests.soak.load", "tests.soak.scale",
                                                  "tests.soak.bombs", "tests.soak.fuzz"}
    plan = subprocess.run(["make", "-n", "soak"], cwd=ROOT, capture_output=True, text=True).stdout
    for module, options in commands:
        assert f"-m {module}" in plan, f"make soak does not run {module}"
        parser_options = importlib.import_module(module).main.__code__.co_consts
        for option in re.findall(r"(--[a-z-]+)", options):
            assert any(option in str(c) for c in parser_options), f"{module} has no {option}"


def test_the_tests_it_names_exist():
    for path in re.findall(r"`(tests/[\w/]+\.py)`", section()):
        assert (ROOT / path).exists(), path


def test_the_faults_table_has_a_row_for_each_fault_the_harness_injects_and_none_lost_or_doubled():
    from tests.soak.faults import FAULTS

    table = section().split("**Faults survived**", 1)[1].split("\n\n", 2)[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [row[0] for row in rows] == [fault.name for fault in FAULTS]
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    for name in ("duplicates", "lost", "sent twice", "tracebacks"):
        assert {row[header.index(name)] for row in rows} == {"0"}, name
