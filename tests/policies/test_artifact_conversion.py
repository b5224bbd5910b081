"""Keeps the proof of the VLA family's conversion to the one artifact format (``scripts/convert_artifacts.py``).

- The shipped artifacts hold exactly the tensors recorded in ``reports/artifacts/conversion.json`` (sha256 of
  dtype, shape and bytes of every tensor: machine-independent), and the record names these very artifacts.
- Where git history is available, the legacy (format 1) artifacts are rebuilt from commit ``b6958eb`` and loaded
  with the legacy loading code; their tensors are the recorded ones, and the VLA's chunk prediction (and the
  quantized policy's) on fixed inputs from the legacy load equals the one from the shipped artifact, bit for bit,
  computed here in the same process (never a float output compared across machines).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "reports" / "artifacts" / "conversion.json"
VLA_FAMILY = ["vla_metaworld_mt6", "vla_metaworld_mt6_weak", "vla_metaworld_mt6_w4a8"]

sys.path.insert(0, str(ROOT / "scripts"))
legacy = pytest.importorskip("_legacy_vla")


def _digests(files: list[Path]) -> dict[str, str]:
    from _convert_perception import tensor_digests

    out: dict[str, str] = {}
    for f in files:
        out.update(tensor_digests(f))
    return out


def _record() -> dict:
    return json.loads(RECORD.read_text())


def _family() -> list[str]:
    return VLA_FAMILY + sorted(k for k in _record() if k.startswith("vla_metaworld_mt6_weak/conceptors/"))


@pytest.mark.parametrize("name", _family())
def test_shipped_tensors_are_the_recorded_legacy_tensors(name):
    from latentstack.core.artifacts import artifact_fingerprint, load_artifact

    rec = _record()[name]
    art = load_artifact(ROOT / "policies" / name)  # verifies every file's sha256 against config.json
    assert rec["tensors_equal"] and rec["outputs_equal"] and rec["format_version"] == 2
    assert rec["fingerprint"] == artifact_fingerprint(art.path), "record is about another version of the artifact"
    weights = [art.path / f for f in art.files if f.endswith(".safetensors")]
    assert _digests(weights) == rec["tensor_digests"] and len(rec["tensor_digests"]) == rec["tensors"]


def _legacy_tree(tmp_path: Path, names: list[str]) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git history in this checkout")
    for n in names:
        try:
            legacy.legacy_from_git(ROOT, f"policies/{n}", tmp_path)
        except FileNotFoundError as exc:
            pytest.skip(f"legacy artifact not in git history: {exc}")
    return tmp_path


@pytest.mark.parametrize("name", ["vla_metaworld_mt6", "vla_metaworld_mt6_weak"])
def test_vla_chunk_equals_legacy_from_git(name, tmp_path):
    from latentstack.policies.checkpoint import from_pretrained

    old_dir = _legacy_tree(tmp_path, [name]) / "policies" / name
    assert legacy.legacy_kind(old_dir) == "vla"
    assert _digests([old_dir / "model.safetensors"]) == _record()[name]["tensor_digests"]
    old, new = legacy.load_legacy_vla(old_dir), from_pretrained(ROOT / "policies" / name)
    batch = legacy.fixed_batch(new.config)
    for seed in (0, 1):
        a, b = legacy.chunk(old, batch, seed), legacy.chunk(new, batch, seed)
        assert a.shape == (3, new.config.chunk_size, new.config.action_dim) and torch.isfinite(a).all()
        assert torch.equal(a, b)
    # the comparison can fail: one changed weight moves the chunk
    with torch.no_grad():
        new.expert.action_out.bias[0] += 1e-3
    assert not torch.equal(legacy.chunk(old, batch, 0), legacy.chunk(new, batch, 0))


def test_quantized_chunk_equals_legacy_from_git(tmp_path):
    from latentstack.quant.artifact import load_quantized

    root = _legacy_tree(tmp_path, ["vla_metaworld_mt6", "vla_metaworld_mt6_w4a8"])
    old_art, old_src = root / "policies" / "vla_metaworld_mt6_w4a8", root / "policies" / "vla_metaworld_mt6"
    assert _digests([old_art / "quant.safetensors"]) == _record()["vla_metaworld_mt6_w4a8"]["tensor_digests"]
    old, _ = legacy.load_legacy_quantized(old_art, old_src, impl="torch")
    new, card = load_quantized(ROOT / "policies" / "vla_metaworld_mt6_w4a8", impl="torch")
    assert card["source"] == "policies/vla_metaworld_mt6"
    batch = legacy.fixed_batch(new.config)
    assert torch.equal(legacy.chunk(old, batch, 0), legacy.chunk(new, batch, 0))


@pytest.mark.parametrize("stem", [k.rsplit("/", 1)[1] for k in _family() if "/conceptors/" in k])
def test_conceptor_steering_equals_legacy_from_git(stem, tmp_path):
    from latentstack.policies.checkpoint import from_pretrained
    from latentstack.steering.intervention import SteeringArtifact

    rel = f"vla_metaworld_mt6_weak/conceptors/{stem}"
    old_stem = _legacy_tree(tmp_path, [rel]) / "policies" / rel
    assert legacy.legacy_kind(old_stem) == "coast"
    policy = from_pretrained(ROOT / "policies" / "vla_metaworld_mt6_weak")
    old = legacy.load_legacy_conceptor(old_stem, expected_d=policy.config.d_model)
    new = SteeringArtifact.load(ROOT / "policies" / rel, source=ROOT / "policies" / "vla_metaworld_mt6_weak")
    assert {k: v for k, v in old.card.items() if k != "format"} == new.card
    batch = legacy.fixed_batch(policy.config)
    out = []
    for art in (old, new):
        with art.intervention(policy, beta=0.5):
            out.append(legacy.chunk(policy, batch, 0))
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], legacy.chunk(policy, batch, 0))


def test_convert_script_is_idempotent():
    """Re-running the committed command on converted artifacts changes nothing."""
    before = {p: p.read_bytes() for n in VLA_FAMILY for p in sorted((ROOT / "policies" / n).rglob("*")) if p.is_file()}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_artifacts.py"), *VLA_FAMILY],
                       check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("already format 2, skipped") == len(VLA_FAMILY) + 3  # + the three conceptors
    after = {p: p.read_bytes() for n in VLA_FAMILY for p in sorted((ROOT / "policies" / n).rglob("*")) if p.is_file()}
    assert before == after
