"""The house rules of kerascnn's layout (../shared/DESIGN.md), checked on the source.

Every import is read from the source (module level and inside functions): no two modules import
each other, lower floors never import higher ones, face inference imports no training code,
nobody imports another module's private names, and no lazily exported name shadows a module.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kerascnn"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported module, names imported from it)] for every kerascnn module."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(alias.name, []) for alias in node.names if alias.name.startswith("kerascnn")]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if base.startswith("kerascnn"):
                    found.append((base, [alias.name for alias in node.names]))
        modules[name] = found
    return modules


MODULES = _imports()


def _targets(module: str) -> set[str]:
    """The kerascnn modules ``module`` imports (``from pkg import submodule`` counts as the submodule)."""
    out = set()
    for base, names in MODULES[module]:
        out.add(base)
        out |= {f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES}
    return {t for t in out if t in MODULES and t != module}


def test_no_two_modules_import_each_other():
    circles = sorted({tuple(sorted((a, b))) for a in MODULES for b in _targets(a) if a in _targets(b)})
    assert circles == []


@pytest.mark.parametrize(
    "lower, higher",
    [
        ("kerascnn.blocks", "kerascnn.models"),
        ("kerascnn.layers", "kerascnn.models"),
        ("kerascnn.models", "kerascnn.face"),
        ("kerascnn.face", "kerascnn.facetrain"),
        ("kerascnn.face", "kerascnn.training"),
        ("kerascnn.face", "kerascnn.distillation"),
        ("kerascnn.face", "kerascnn.serve"),
        ("kerascnn.face", "kerascnn.cli"),
        ("kerascnn.facetrain", "kerascnn.cli"),
    ],
)
def test_lower_floors_never_import_higher_ones(lower, higher):
    def inside(module, prefix):
        return module == prefix or module.startswith(prefix + ".")

    offenders = sorted((m, t) for m in MODULES if inside(m, lower) for t in _targets(m) if inside(t, higher))
    assert offenders == []


def test_nothing_imports_the_command_line():
    offenders = sorted((m, t) for m in MODULES if not m.startswith("kerascnn.cli") and m != "kerascnn.__main__"
                       for t in _targets(m) if t.startswith("kerascnn.cli"))
    assert offenders == []


def test_no_module_imports_another_modules_private_names():
    offenders = sorted((m, base, n) for m in MODULES for base, names in MODULES[m]
                       for n in names if n.startswith("_") and not n.startswith("__") and base != m)
    assert offenders == []


@pytest.mark.parametrize("package", ["kerascnn", "kerascnn.face", "kerascnn.facetrain"])
def test_no_lazily_exported_name_equals_a_module_name(package):
    module = importlib.import_module(package)
    folder = Path(module.__file__).parent
    submodules = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}
    assert sorted(set(getattr(module, "_EXPORTS", {})) & submodules) == []


def test_importing_kerascnn_leaves_tensorflow_logging_alone():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import os, kerascnn, kerascnn.face; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.strip() == "None"


def test_the_command_line_is_a_package_of_short_modules():
    """cli/ holds one module per group of commands, parsing and printing only: none grows long."""
    assert not (PACKAGE / "cli.py").exists()
    lengths = {path.name: len(path.read_text().splitlines()) for path in sorted((PACKAGE / "cli").glob("*.py"))}
    assert {"__init__.py", "app.py", "face.py", "gallery.py"} <= set(lengths)
    assert {name: n for name, n in lengths.items() if n > 400} == {}
