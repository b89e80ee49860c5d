"""The README is a front door and docs/ holds the reference: short, linked, current, self-contained.

- README.md stays at most 200 lines and names the two commands;
- the finding table in docs/findings.md is the one the code generates (`make docs`);
- every relative link in README.md and docs/*.md points to a file that exists;
- no file of the repository points outside it (an absolute path of the machine it was written on,
  or a sibling directory reached with `..`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 200
# Built from pieces so that this file does not contain what it looks for.
OUTSIDE_PATHS = ("/" + "work/", ".." + "/shared")

_FENCED = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """The link targets in `path` that name a file in the repository (code is not prose: skipped)."""
    text = _CODE_SPAN.sub("", _FENCED.sub("", path.read_text()))
    targets = []
    for target in _LINK.findall(text):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path:  # http(s), mailto, or "#anchor" in the same file
            continue
        targets.append(unquote(parts.path))
    return targets


def test_readme_is_at_most_200_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines: move reference material into docs/"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make test" in text
    assert "make run" in text


def test_finding_table_is_current():
    from scripts.finding_docs import finding_table  # here: the other checks need none of the code

    assert finding_table() in (DOCS / "findings.md").read_text(), (
        "run `make docs` to regenerate the finding table in docs/findings.md"
    )


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path: Path):
    assert path.exists()
    missing = [t for t in relative_links(path) if not (path.parent / t).exists()]
    assert not missing, f"{path.relative_to(ROOT)} links to files that do not exist: {missing}"


def repository_files() -> list[Path]:
    """Every file git knows of: tracked, plus new files not ignored (so a file is checked before
    its first commit too)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    names = sorted({name for name in listed.decode().split("\0") if name})
    return [ROOT / name for name in names if (ROOT / name).is_file()]  # a file deleted but not yet staged is gone


def test_no_file_points_outside_the_repository():
    offenders: dict[str, list[str]] = {}
    for path in repository_files():
        data = path.read_bytes()
        if b"\0" in data:  # binary
            continue
        found = [p for p in OUTSIDE_PATHS if p.encode() in data]
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, f"files that reference paths outside the repository: {offenders}"
