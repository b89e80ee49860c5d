"""The README's finding table is generated from the code; it must not go stale."""

from pathlib import Path

from scripts.finding_docs import finding_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_finding_table_is_current():
    assert finding_table() in README.read_text(), "run `make docs` to regenerate the README's finding table"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make test" in text
    assert "make run" in text
