"""Issue 14, finding 10 (artifact part): a quantized artifact's own files are integrity-checked and its
ATM/OHB calibration values are bounded before anything is folded into the policy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from latentstack.core.artifacts import ArtifactError, sha256_file
from latentstack.quant.artifact import load_quantized

W4A8 = Path(__file__).resolve().parents[2] / "policies" / "vla_metaworld_mt6_w4a8"


@pytest.fixture
def copy(tmp_path) -> Path:
    if not W4A8.exists():
        pytest.skip("shipped quantized artifact not present")
    out = tmp_path / "w4a8"
    shutil.copytree(W4A8, out)  # its source is recorded repo-relative, so the copy still finds it
    return out


def _reseal(art: Path, name: str) -> None:
    doc = json.loads((art / "config.json").read_text())
    doc["files"][name] = sha256_file(art / name)
    (art / "config.json").write_text(json.dumps(doc, indent=2))


def test_zeroed_quant_weights_are_refused(copy):
    doc = json.loads((copy / "config.json").read_text())
    assert "quant.safetensors" in doc["files"] and "atm_ohb.json" in doc["files"]
    n = (copy / "quant.safetensors").stat().st_size
    (copy / "quant.safetensors").write_bytes(bytes(n))
    with pytest.raises(ArtifactError, match="quant.safetensors sha256 differs"):
        load_quantized(copy)
    # unlisting the file does not help: the loader reads only files config.json hashes
    del doc["files"]["quant.safetensors"]
    (copy / "config.json").write_text(json.dumps(doc, indent=2))
    with pytest.raises(ArtifactError, match="quant.safetensors"):
        load_quantized(copy)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["beta"].update({next(iter(d["beta"])): 1e30}), "beta"),
    (lambda d: d["beta"].update({next(iter(d["beta"])): float("nan")}), "beta"),
    (lambda d: d["alpha"][next(iter(d["alpha"]))].__setitem__(0, -1.0), "alpha"),
    (lambda d: d["alpha"][next(iter(d["alpha"]))].__setitem__(0, 1e30), "alpha"),
    (lambda d: d["alpha"].update({next(iter(d["alpha"])): "1.0"}), "alpha"),
])
def test_out_of_range_atm_ohb_is_refused_at_load(copy, edit, match):
    """Re-sealed (hash valid): only the range check stops it; before, beta = 1e30 loaded and gave NaN actions."""
    cal = json.loads((copy / "atm_ohb.json").read_text())
    edit(cal)
    (copy / "atm_ohb.json").write_text(json.dumps(cal))
    _reseal(copy, "atm_ohb.json")
    with pytest.raises(ArtifactError, match=match):
        load_quantized(copy)
