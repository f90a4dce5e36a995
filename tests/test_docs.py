"""The documentation: the README's shape, and the MkDocs site built in strict mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
MAIN_JOB = ("python3 -m venv .venv && .venv/bin/pip install -q . && "
            ".venv/bin/kerascnn demo --data ../shared/data")
TESTS = 'python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" && .venv/bin/python -m pytest'


def _readme_lines() -> list[str]:
    return (REPO / "README.md").read_text(encoding="utf-8").splitlines()


def test_readme_is_short():
    lines = _readme_lines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines, expected under {README_MAX_LINES}"


def test_readme_starts_with_the_two_commands():
    lines = _readme_lines()
    body = [line for line in lines[1:] if line.strip()]          # after the title
    assert lines[0].startswith("# "), f"README.md should open with its title, not {lines[0]!r}"
    assert body[0] == "```bash", f"the title should be followed by the commands' block, not {body[0]!r}"
    block = body[1:body.index("```", 1)]
    commands = [line for line in block if not line.startswith("#")]
    assert commands == [MAIN_JOB, TESTS]


@pytest.mark.slow
def test_docs_build_in_strict_mode(tmp_path):
    """A broken ``:::`` reference, link, anchor or included README section fails the build."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api_page = (tmp_path / "site" / "api" / "face.gallery" / "index.html").read_text(encoding="utf-8")
    assert "open_gallery" in api_page          # rendered from the docstrings, not an empty page
