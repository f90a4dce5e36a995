"""The documentation: the README's shape, and the MkDocs site built in strict mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
MAIN_JOB = ("python3 -m venv .venv && .venv/bin/pip install -q . && "
            ".venv/bin/kerascnn demo --data ../shared/data")
TESTS = ('python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" && '
         '.venv/bin/python -m pytest -n auto --maxprocesses 4')


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


def test_ci_runs_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert TESTS in script, ".ci/run should run the README's test command as printed"


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


def _quick_start_python_blocks() -> list[str]:
    """The Python blocks of the README's face quick start, as printed (up to "The same from the shell")."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Quick start"):text.index("### The same from the shell")]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_quick_start_shows_each_face_task_in_three_lines_and_one_import():
    blocks = _quick_start_python_blocks()
    assert len(blocks) == 3  # compare; open + enroll; verify / identify on the same gallery
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip()]
        assert len(lines) <= 3 and sum(line.startswith(("import ", "from ")) for line in lines) <= 1, block


@pytest.mark.slow
def test_quick_start_runs_as_printed(tmp_path, orl_dir):
    """The README's Python quick start, run unchanged, on real faces with the default model and detector."""
    photos = {"a.jpg": "s1/1.pgm", "b.jpg": "s1/2.pgm", "alice1.jpg": "s1/3.pgm", "alice2.jpg": "s1/4.pgm",
              "probe.jpg": "s1/5.pgm"}
    for name, source in photos.items():
        (tmp_path / name).symlink_to(orl_dir / source)
    compare, enroll, decide = _quick_start_python_blocks()
    script = "\n".join([
        compare, "assert result.match and result.threshold_source['origin'] == 'card', result",
        enroll, "assert faces.verify('alice', 'probe.jpg').match and faces.identify('probe.jpg').name == 'alice'",
        decide, "assert faces.people() == []", "print('quick start ok')",
    ])
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout.strip().endswith("quick start ok"), done.stdout + done.stderr
    assert (tmp_path / "faces.db").is_file()
