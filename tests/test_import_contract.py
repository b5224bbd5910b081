"""DESIGN.md's layers as an import-linter contract (``[tool.importlinter]`` in pyproject.toml): the package keeps
it, and the contract really fails when a lower layer imports a higher one, a node core imports rclpy, or two
sibling modules import each other."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = 4


def _lint_imports(src: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e .[dev])")
    # the package is found on sys.path: `src` first, so a patched copy shadows this checkout's editable install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([exe, "--no-cache", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_package_keeps_the_import_contract():
    out = _lint_imports(ROOT / "src")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert f"Contracts: {CONTRACTS} kept, 0 broken." in out.stdout, out.stdout[-3000:]


@pytest.fixture(scope="module")
def patched_copy(tmp_path_factory) -> Path:
    """A copy of the package with three new back-edges, one per kind of contract."""
    src = tmp_path_factory.mktemp("src")
    pkg = src / "latentstack"
    shutil.copytree(ROOT / "src" / "latentstack", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    edits = {
        "kernels/__init__.py": "\ndef _back_edge():\n    from latentstack.nodes import base  # noqa: F401\n",
        "nodes/base.py": "\ndef _rclpy_edge():\n    import rclpy  # noqa: F401\n",
        "msgs/errors.py": "\ndef _cycle():\n    from latentstack.msgs import typestore  # noqa: F401\n",
    }
    for rel, text in edits.items():
        with open(pkg / rel, "a") as f:
            f.write(text)
    return src


def test_the_contract_catches_back_edges(patched_copy: Path):
    out = _lint_imports(patched_copy)
    assert out.returncode != 0
    text = out.stdout
    assert f"Contracts: {CONTRACTS - 3} kept, 3 broken." in text, text[-4000:]
    assert "latentstack.kernels is not allowed to import latentstack.nodes" in text
    assert "latentstack.nodes is not allowed to import rclpy" in text
    assert "No cycles are allowed in latentstack.msgs" in text
