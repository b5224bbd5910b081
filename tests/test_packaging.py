"""Packaging: the wheel carries the runtime data and the ROS node executables, an install outside the checkout
finds suites / graphs / node parameters / default configs by name (pip venv and colcon-style prefix), only
``lstack`` reaches a pip user's PATH, package.xml names every ROS package the code uses, and the code stays
within Python 3.10 (the oldest ROS 2 distro we serve: Humble).

Offline: the wheel is built with setuptools' PEP 517 backend from a copy of the checkout and installed with
``pip --no-index --no-deps`` into a scratch venv; the colcon install runs the ``setup.py`` commands colcon runs;
the dependencies come from this interpreter's site-packages. This environment is never modified.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "latentstack"
# checkout folder/glob -> folder under <prefix>/share/latentstack (the resolver's DATA_KINDS, core/paths.py)
SHARED_DATA = {
    "sim/suites/*.yaml": "suites",
    "ros/graphs/*.yaml": "graphs",
    "ros/config/*.yaml": "config",
    "ros/launch/*.launch.py": "launch",
    "configs/*.yaml": "configs",
}
# the artifacts the launch files default to, installed to share/latentstack/policies (setup.py LAUNCH_ARTIFACTS)
LAUNCH_ARTIFACTS = ["policies/vla_metaworld_mt6", "policies/lion_tiny", "policies/stereo_sa2_tiny"]
# setup.py LATER_ARTIFACTS: installed (and so checked here) once the artifact exists in the checkout
LAUNCH_ARTIFACTS += [a for a in ["policies/unilion_tiny"] if (ROOT / a / "config.json").is_file()]
BUILD_INPUTS = ["pyproject.toml", "setup.py", "setup.cfg", "README.md", "package.xml", "resource", "ros",
                "sim/suites", "configs", "src", *LAUNCH_ARTIFACTS]


def node_modules() -> list[str]:
    """ROS node wrappers (``latentstack/ros/<name>_node.py``): each needs an executable in lib/latentstack."""
    return sorted(p.stem for p in (ROOT / "src" / PKG / "ros").glob("[!_]*_node.py"))


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, f"{cmd[:4]}... failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    """No hint of the checkout: LATENTSTACK_ROOT, AMENT_PREFIX_PATH and PYTHONPATH removed."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LATENTSTACK_ROOT", "AMENT_PREFIX_PATH", "PYTHONPATH", "PIP_CONSTRAINT")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _copy_sources(dest: Path) -> Path:
    """What a source distribution / colcon sees of the checkout (the checkout gets no build/ or egg-info)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for rel in BUILD_INPUTS:
        s, d = ROOT / rel, dest / rel
        if s.is_dir():
            shutil.copytree(s, d, ignore=ignore)
        else:
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline by setuptools' PEP 517 backend from a copy of the checkout."""
    src = _copy_sources(tmp_path_factory.mktemp("src"))
    dist = tmp_path_factory.mktemp("dist")
    code = f"from setuptools import build_meta as b; print(b.build_wheel({str(dist)!r}))"
    name = _run([sys.executable, "-c", code], cwd=src, env=_clean_env()).strip().splitlines()[-1]
    return dist / name


def _site_packages_pth(prefix: Path) -> Path:
    rel = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return prefix / rel


# ---------------------------------------------------------------------------------------------------- wheel
def test_wheel_lists_data_files_and_node_executables(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
        stem = wheel.name.split("-py")[0]  # latentstack-<version>
        meta = z.read(f"{stem}.dist-info/METADATA").decode()
        entry_points = z.read(f"{stem}.dist-info/entry_points.txt").decode()
    data = f"{stem}.data/data/"
    for pattern, share in SHARED_DATA.items():
        files = sorted(ROOT.glob(pattern))
        assert files, pattern
        for f in files:
            assert f"{data}share/{PKG}/{share}/{f.name}" in infos, f"{f.relative_to(ROOT)} is not in the wheel"
    for art in LAUNCH_ARTIFACTS:  # what `ros2 launch` defaults to, findable from any directory
        for f in sorted((ROOT / art).rglob("*")):
            if f.is_file():
                assert f"{data}share/{PKG}/{f.relative_to(ROOT).as_posix()}" in infos, f"{f} is not in the wheel"
    assert f"{data}share/ament_index/resource_index/packages/{PKG}" in infos
    assert f"{data}share/{PKG}/package.xml" in infos
    # node executables: in lib/latentstack (where `ros2 run` looks), executable, one per wrapper module
    for node in node_modules():
        info = infos.get(f"{data}lib/{PKG}/{node}")
        assert info is not None, f"no lib/{PKG}/{node} in the wheel: add ros/bin/{node} (copy ros/bin/policy_node)"
        assert (info.external_attr >> 16) & 0o111 == 0o111, f"lib/{PKG}/{node} is not executable"
    # only `lstack` goes on PATH: no console script with a generic node name, no scripts folder
    section = re.search(r"\[console_scripts\]\n(.*?)(?:\n\[|\Z)", entry_points, re.DOTALL)
    scripts = {line.split("=")[0].strip() for line in (section.group(1) if section else "").splitlines() if "=" in line}
    assert scripts == {"lstack"}, scripts
    assert not [n for n in infos if n.startswith(f"{stem}.data/scripts/")]
    # installable where ROS 2 runs: Humble (3.10) .. Jazzy (3.12); dependencies as ranges, never exact pins
    assert "Requires-Python: <3.13,>=3.10" in meta or "Requires-Python: >=3.10,<3.13" in meta
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert any(r.startswith("torch") for r in requires)
    assert not [r for r in requires if "==" in r.split(";")[0]], f"exact pins in the wheel's dependencies: {requires}"


def test_node_executables_match_the_wrappers():
    """ros/bin/<node> (installed to lib/latentstack) exists for every wrapper module and runs its ``main``."""
    scripts = sorted(p.name for p in (ROOT / "ros" / "bin").iterdir() if not p.name.startswith("."))
    assert scripts == node_modules()
    for name in scripts:
        path = ROOT / "ros" / "bin" / name
        assert os.access(path, os.X_OK), f"ros/bin/{name} is not executable (git update-index --chmod=+x)"
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env python3\n")
        assert f"from latentstack.ros.{name} import main" in text


# ----------------------------------------------------------------------------------------- installed wheel
PROBE = textwrap.dedent("""
    import json, os, sys
    import latentstack
    from latentstack.core import paths
    from latentstack.sim.suites import load_suite
    from latentstack.ros.graph import load_graph
    from latentstack.policies.factory import CONFIG_DIR, DEFAULT_VLA_YAML
    suite = load_suite("metaworld_mt6")
    graph = load_graph("metaworld")
    print(json.dumps({
        "package": latentstack.__file__,
        "repo_root": str(paths.repo_root()) if paths.repo_root() else None,
        "suite": str(paths.find_data("suites", "metaworld_mt6")), "suite_tasks": len(suite.tasks),
        "graph": graph.source, "graph_nodes": sorted(n.name for n in graph.nodes),
        "params": str(paths.find_data("params", "policy_node")),
        "launch": str(paths.find_data("launch", "metaworld")),
        "configs": str(CONFIG_DIR), "vla_yaml": DEFAULT_VLA_YAML.is_file(),
        "suites_listed": paths.list_data("suites"),
    }))
""")


def _check_probe(out: str, prefix: Path) -> None:
    got = json.loads(out.strip().splitlines()[-1])
    share = prefix.resolve() / "share" / PKG
    assert Path(got["package"]).resolve().is_relative_to(prefix.resolve()), got["package"]
    assert got["repo_root"] is None  # really outside the checkout
    assert Path(got["suite"]).resolve() == share / "suites" / "metaworld_mt6.yaml"
    assert got["suite_tasks"] == 6 and "metaworld_mt6" in got["suites_listed"]
    assert Path(got["graph"]).resolve() == share / "graphs" / "metaworld.yaml"
    assert {"policy_node", "sim_bridge"} <= set(got["graph_nodes"])
    assert Path(got["params"]).resolve() == share / "config" / "policy_node.yaml"
    assert Path(got["launch"]).resolve() == share / "launch" / "metaworld.launch.py"
    assert Path(got["configs"]).resolve() == share / "configs" and got["vla_yaml"]


def _check_node_executable(python: str, prefix: Path, cwd: Path, env: dict[str, str]) -> None:
    exe = prefix / "lib" / PKG / "policy_node"
    assert os.access(exe, os.X_OK), exe
    try:
        import rclpy  # noqa: F401
    except ImportError:  # the script runs the installed wrapper, which explains what is missing
        out = subprocess.run([python, str(exe)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                             check=False)
        assert out.returncode == 2 and "rclpy is not importable" in out.stderr, out.stderr[-2000:]


def _pip_install(wheel: Path, venv: Path, *extra: str) -> None:
    """pip runs *inside* ``venv`` (``--python``): never against this environment, whose editable latentstack a
    ``--prefix`` install would otherwise uninstall."""
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
          "--no-index", "--no-compile", *extra, str(wheel)], cwd=venv.parent, env=_clean_env())


def _new_venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], cwd=path.parent)
    return path


def test_wheel_in_a_venv_finds_data_by_name(wheel: Path, tmp_path: Path):
    """``pip install latentstack`` into a venv: data under ``sys.prefix/share/latentstack``, nodes in lib."""
    venv = _new_venv(tmp_path / "venv")
    _pip_install(wheel, venv)
    py = str(venv / "bin" / "python")
    # the dependencies (torch, numpy, yaml, ...) from this interpreter's site-packages, after the wheel's copy;
    # a plain path entry, so this environment's editable latentstack (a .pth inside it) is not picked up
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path).strip())
    (site / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    assert (venv / "bin" / "lstack").is_file()
    assert not [n for n in node_modules() if (venv / "bin" / n).exists()], "node executables leaked onto PATH"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    _check_probe(_run([py, "-c", PROBE], cwd=elsewhere, env=env), venv)
    _check_node_executable(py, venv, elsewhere, env)
    assert "launch" in _run([str(venv / "bin" / "lstack"), "--help"], cwd=elsewhere, env=env)


def test_colcon_install_finds_data_through_ament_prefix_path(tmp_path: Path):
    """colcon's ament_python build (``setup.py egg_info / build / install --prefix install/latentstack``, with
    setup.cfg's script dirs) into a prefix that is not ``sys.prefix``, found as ``ros2 run`` finds it: through
    ``AMENT_PREFIX_PATH``."""
    src = _copy_sources(tmp_path / "src")
    (src / "build").mkdir()
    prefix = tmp_path / "install" / PKG
    _run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", "build", "build", "--build-base", "build",
          "install", "--prefix", str(prefix), "--record", "build/install.txt", "--single-version-externally-managed"],
         cwd=src, env=_clean_env())
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PKG).is_file()
    for node in [*node_modules(), "lstack"]:  # setup.cfg: colcon puts console scripts in lib/latentstack too
        assert os.access(prefix / "lib" / PKG / node, os.X_OK), f"lib/{PKG}/{node}"
    assert not (prefix / "bin").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(AMENT_PREFIX_PATH=str(prefix), PYTHONPATH=str(_site_packages_pth(prefix)))
    _check_probe(_run([sys.executable, "-c", PROBE], cwd=elsewhere, env=env), prefix)
    _check_node_executable(sys.executable, prefix, elsewhere, env)


# ------------------------------------------------------------------------------------------------ package.xml
# ROS 2 Python packages the code may import (top-level module == ROS package name).
ROS_PYTHON_PACKAGES = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "launch", "launch_ros", "message_filters",
                       "tf2_ros", "ament_index_python", "builtin_interfaces", "cv_bridge", "sensor_msgs_py"}
_MSG_TYPE = re.compile(r"^([a-z][a-z0-9_]*)/(?:msg/)?[A-Z][A-Za-z0-9]*$")
_MSG_FIELD = re.compile(r"^([a-z][a-z0-9_]*)/[A-Z][A-Za-z0-9]*(?:\[\d*\])? \w+")


def ros_packages_used() -> dict[str, str]:
    """ROS package -> one place that uses it: message type names (``pkg/msg/Type``, ``pkg/Type``), field types
    in the .msg definitions the code registers, and imports of ROS Python packages (src and launch files)."""
    used: dict[str, str] = {}
    files = sorted((ROOT / "src" / PKG).rglob("*.py")) + sorted((ROOT / "ros" / "launch").glob("*.py"))
    for f in files:
        where = str(f.relative_to(ROOT))
        for node in ast.walk(ast.parse(f.read_text(), filename=where)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                m = _MSG_TYPE.match(node.value)
                if m:
                    used.setdefault(m.group(1), where)
                for line in node.value.splitlines():
                    m = _MSG_FIELD.match(line)
                    if m:
                        used.setdefault(m.group(1), where)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    if top in ROS_PYTHON_PACKAGES or top.endswith(("_msgs", "_interfaces")):
                        used.setdefault(top, where)
    return used


def test_package_xml_depends_on_every_ros_package_the_code_uses():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == PKG
    for tag in ("version", "description", "maintainer", "license", "url", "author"):
        assert (root.findtext(tag) or "").strip(), f"package.xml lacks <{tag}>"
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version and root.findtext("version") == version.group(1)  # one version for pip and for ROS
    assert root.find("export/build_type").text == "ament_python"
    run_deps = {e.text for e in root if e.tag in ("exec_depend", "depend")}
    used = ros_packages_used()
    used.pop("latentstack_test_msgs", None)  # a test-only type registered at run time, not a ROS package
    # service_msgs/ServiceEventInfo only enters service type hashes (msgs.typehash), from the typestore's own copy
    used.pop("service_msgs", None)
    missing = {pkg: where for pkg, where in used.items() if pkg not in run_deps}
    assert not missing, f"package.xml lacks <exec_depend> for {missing}"
    # the scan itself sees what it must (a scan that finds nothing would pass vacuously)
    assert {"rclpy", "sensor_msgs", "std_msgs", "stereo_msgs", "vision_msgs", "launch_ros"} <= set(used)


# ---------------------------------------------------------------------------------------------- Python 3.10
# typing names that only exist from 3.11/3.12: allowed under `if TYPE_CHECKING:` (never executed)
_TYPING_311 = {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "Required",
               "NotRequired", "TypeVarTuple", "Unpack", "dataclass_transform", "get_overloads",
               "clear_overloads", "override", "TypeAliasType", "get_protocol_members", "is_protocol"}


def _runtime_typing_imports(tree: ast.AST) -> list[tuple[int, str]]:
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "typing" and id(node) not in guarded:
            bad += [(node.lineno, a.name) for a in node.names if a.name in _TYPING_311]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "typing" \
                and node.attr in _TYPING_311 and id(node) not in guarded:
            bad.append((node.lineno, f"typing.{node.attr}"))
    return bad


def _vermin(paths: list[str], cwd: Path) -> subprocess.CompletedProcess:
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install -e .[dev])")
    # typing.Self etc.: checked by _runtime_typing_imports instead (vermin does not know TYPE_CHECKING);
    # `long`: vermin mistakes torch's Tensor.long() for Python 2's builtin
    args = [vermin, "-t=3.10-", "--no-tips", "--violations", "--eval-annotations", "--no-make-paths-absolute",
            *[a for n in sorted(_TYPING_311) for a in ("--exclude", f"typing.{n}")], "--exclude", "long", *paths]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_code_runs_on_python_3_10():
    out = _vermin(["src", "tests", "benchmarks", "scripts"], ROOT)
    assert out.returncode == 0, f"syntax or stdlib newer than Python 3.10:\n{out.stdout[-4000:]}{out.stderr[-2000:]}"
    bad = {}
    for f in sorted(f for d in ("src", "tests", "benchmarks", "scripts") for f in (ROOT / d).rglob("*.py")):
        hits = _runtime_typing_imports(ast.parse(f.read_text(), filename=str(f)))
        if hits:
            bad[str(f.relative_to(ROOT))] = hits
    assert not bad, f"typing names newer than 3.10 imported at run time (guard with `if TYPE_CHECKING:`): {bad}"


def test_the_3_10_checks_catch_newer_code(tmp_path: Path):
    """The two checks above fail on code that needs 3.11+ (so their passing means something)."""
    (tmp_path / "new.py").write_text("import tomllib\nfrom enum import StrEnum\n")
    assert _vermin(["new.py"], tmp_path).returncode != 0
    tree = ast.parse("from typing import TYPE_CHECKING, Self\nif TYPE_CHECKING:\n    from typing import Never\n")
    assert _runtime_typing_imports(tree) == [(1, "Self")]
