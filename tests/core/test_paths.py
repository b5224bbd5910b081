"""The one data resolver: checkout, LATENTSTACK_ROOT, installed share/latentstack prefixes."""
from __future__ import annotations

from pathlib import Path

import pytest

from latentstack.core import paths


def test_checkout_is_found_and_data_by_name() -> None:
    root = paths.repo_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    assert paths.find_data("suites", "metaworld_mt6") == root / "sim" / "suites" / "metaworld_mt6.yaml"
    assert paths.find_data("suites", "metaworld_mt6.yaml") == root / "sim" / "suites" / "metaworld_mt6.yaml"
    assert "metaworld_mt6" in paths.list_data("suites")
    assert "metaworld" in paths.list_data("graphs")
    assert "vla_metaworld_mt6" in paths.list_data("policies")


def test_unknown_name_and_kind_are_clear_errors() -> None:
    with pytest.raises(FileNotFoundError, match="no suite named 'nope'"):
        paths.find_data("suites", "nope")
    with pytest.raises(KeyError, match="unknown data kind"):
        paths.data_dirs("weights")


def test_installed_prefix_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an install prefix as pip/colcon lays it out, and no checkout in sight
    share = tmp_path / "prefix" / "share" / "latentstack"
    (share / "suites").mkdir(parents=True)
    (share / "suites" / "only_installed.yaml").write_text("name: x\n")
    monkeypatch.setattr(paths, "repo_root", lambda: None)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))
    monkeypatch.chdir(tmp_path)
    assert paths.find_data("suites", "only_installed") == share / "suites" / "only_installed.yaml"
    assert paths.list_data("suites") == ["only_installed"]


def test_latentstack_root_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTSTACK_ROOT", str(tmp_path))
    assert paths.repo_root() == tmp_path.resolve()


def test_resolve_and_portable_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = paths.repo_root()
    monkeypatch.chdir(tmp_path)  # relative artifact paths still resolve from elsewhere
    assert paths.resolve_path("policies/vla_metaworld_mt6") == root / "policies" / "vla_metaworld_mt6"
    assert paths.resolve_path("does/not/exist") == Path("does/not/exist")
    assert paths.portable_path(root / "policies" / "vla_metaworld_mt6") == "policies/vla_metaworld_mt6"
    # outside the checkout only the name is recorded, never a machine's absolute path
    assert paths.portable_path(tmp_path / "run1" / "model") == "model"


def test_portable_command_hides_machine_paths(tmp_path: Path) -> None:
    root = paths.repo_root()
    cmd = paths.portable_command(
        ["steer", "study", "--policy", str(root / "policies" / "vla_metaworld_mt6"), f"--out={tmp_path / 'r'}", "-n", "3"]
    )
    assert cmd == "lstack steer study --policy policies/vla_metaworld_mt6 --out=r -n 3"


def test_find_config_by_path_or_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = paths.repo_root()
    monkeypatch.chdir(tmp_path)
    assert paths.find_config("vla_small") == root / "configs" / "vla_small.yaml"
    assert paths.find_config("configs/vla_small.yaml") == root / "configs" / "vla_small.yaml"
    with pytest.raises(FileNotFoundError):
        paths.find_config("no_such_config")
