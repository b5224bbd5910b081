"""The one resolver for runtime data: suites, graphs, node parameter files, default configs, shipped artifacts.

The same names work from a source checkout, a wheel install (``pip install``) and a colcon install:

- a checkout is found from ``LATENTSTACK_ROOT`` or by walking up from this file to the directory holding
  ``pyproject.toml`` and ``sim/suites``;
- installs put the data under ``<prefix>/share/latentstack/`` (``setup.py`` ``data_files``); the prefixes tried
  are ``sys.prefix``, the user base and every entry of ``AMENT_PREFIX_PATH`` (what ``ros2 run`` sees after
  sourcing a colcon workspace).

Each kind of data has one relative location in a checkout and one under ``share/latentstack``.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

PACKAGE = "latentstack"

# kind -> (folder in a source checkout, folder under <prefix>/share/latentstack)
DATA_KINDS: dict[str, tuple[str, str]] = {
    "suites": ("sim/suites", "suites"),
    "graphs": ("ros/graphs", "graphs"),
    "params": ("ros/config", "config"),
    "launch": ("ros/launch", "launch"),
    "configs": ("configs", "configs"),
    "policies": ("policies", "policies"),
}
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "suites": (".yaml",),
    "graphs": (".yaml",),
    "params": (".yaml",),
    "launch": (".launch.py",),
    "configs": (".yaml", ".json"),
    "policies": ("",),
}


def repo_root() -> Path | None:
    """The source checkout this package runs from (``LATENTSTACK_ROOT`` wins), or ``None`` when installed."""
    env = os.environ.get("LATENTSTACK_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "sim" / "suites").is_dir():
            return parent
    return None


def share_dirs() -> list[Path]:
    """``<prefix>/share/latentstack`` folders that exist, in lookup order."""
    prefixes = [sys.prefix, site.getuserbase()]
    prefixes += [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    out: list[Path] = []
    for prefix in prefixes:
        d = Path(prefix) / "share" / PACKAGE
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def data_dirs(kind: str) -> list[Path]:
    """Every existing folder holding data of ``kind``: the checkout's first, then installed copies."""
    if kind not in DATA_KINDS:
        raise KeyError(f"unknown data kind {kind!r}; known: {sorted(DATA_KINDS)}")
    in_repo, in_share = DATA_KINDS[kind]
    dirs: list[Path] = []
    root = repo_root()
    if root is not None and (root / in_repo).is_dir():
        dirs.append(root / in_repo)
    dirs += [d / in_share for d in share_dirs() if (d / in_share).is_dir()]
    return dirs


def find_data(kind: str, name: str) -> Path:
    """A data file (or artifact folder) of ``kind`` by name, e.g. ``find_data("suites", "metaworld_mt6")``.

    ``name`` may carry its suffix or not; an existing path (absolute, or relative to the cwd) is returned as is.
    """
    p = Path(name)
    if p.exists():
        return p
    tried: list[str] = []
    for d in data_dirs(kind):
        for suffix in ("",) + _SUFFIXES[kind]:
            cand = d / (name + suffix if suffix and not name.endswith(suffix) else name)
            if cand.exists():
                return cand
        tried.append(str(d))
    raise FileNotFoundError(
        f"no {kind.removesuffix('s')} named {name!r} (looked in the cwd and {tried or 'no data folder'}; "
        "set LATENTSTACK_ROOT to a checkout, or install the package with its data files)"
    )


def list_data(kind: str) -> list[str]:
    """Names (stems) of the data of ``kind`` available through :func:`find_data`."""
    names: set[str] = set()
    for d in data_dirs(kind):
        for entry in d.iterdir():
            for suffix in _SUFFIXES[kind]:
                if suffix and entry.name.endswith(suffix):
                    names.add(entry.name[: -len(suffix)])
                elif not suffix and entry.is_dir():
                    names.add(entry.name)
    return sorted(names)


def resolve_path(path: str | os.PathLike) -> Path:
    """A user-given relative path: as given when it exists from the cwd, else under the checkout root (so
    ``policies/vla_metaworld_mt6`` works from any directory), else unchanged (the caller reports it missing)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    root = repo_root()
    if root is not None and (root / p).exists():
        return root / p
    for d in share_dirs():  # installed copies keep the checkout's top-level names under share/latentstack
        if (d / p).exists():
            return d / p
    return p


def find_config(path_or_name: str | os.PathLike) -> Path:
    """A config file by path (checkout-relative paths work from any cwd) or by name (``vla_small``, ``korr_toy``:
    the ``configs`` data folder); ``FileNotFoundError`` names where it looked."""
    p = resolve_path(path_or_name)
    return p if p.is_file() else find_data("configs", str(path_or_name))


def repo_relative(path: str | os.PathLike) -> str | None:
    """``path`` relative to the checkout (POSIX form), or ``None`` when it is outside it or there is none."""
    root = repo_root()
    if root is None:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def portable_path(path: str | os.PathLike) -> str:
    """How a path is *recorded* in committed files: relative to the checkout when inside it, else its name —
    never an absolute path of the machine that wrote it."""
    rel = repo_relative(path)
    return rel if rel is not None else Path(path).resolve().name


def portable_command(argv: list[str], prog: str = "lstack") -> str:
    """A command line as it is *recorded* in reports: absolute paths (also in ``--flag=/path``) are written with
    :func:`portable_path`, so a report never carries a path of the machine that ran it."""

    def one(tok: str) -> str:
        flag, eq, value = tok.partition("=") if tok.startswith("--") else ("", "", tok)
        if os.path.isabs(value):
            value = portable_path(value)
        return flag + eq + value

    return " ".join([prog, *(one(t) for t in argv)])


__all__ = [
    "DATA_KINDS",
    "data_dirs",
    "find_config",
    "find_data",
    "list_data",
    "portable_command",
    "portable_path",
    "repo_relative",
    "repo_root",
    "resolve_path",
    "share_dirs",
]
