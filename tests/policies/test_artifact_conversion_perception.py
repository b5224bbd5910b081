"""Keeps the proof of the conversion of LION, stereo, KORR and the LeRobot ACT artifacts to the one artifact format
(``scripts/_convert_perception.py``, run by ``scripts/convert_artifacts.py``).

- Each shipped artifact is format 2, loads through its type's registered loader, and holds exactly the tensors
  recorded in ``reports/artifacts/conversion.json`` (sha256 of dtype, shape and bytes: machine-independent).
- Where git history is available, the legacy artifact is rebuilt from the commit before the conversion and
  converted again here: the legacy load (the old loading code, kept in the script) and the new-format load give
  bit-identical outputs on fixed inputs in the same process, and the converted tensors are the shipped ones.
- A legacy folder is refused by the new loaders with a message naming the conversion command.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "reports" / "artifacts" / "conversion.json"
LEGACY_REV = "b6958eb"  # the last commit with every one of these artifacts in its old format

sys.path.insert(0, str(ROOT / "scripts"))
conv = pytest.importorskip("_convert_perception")

NAMES = list(conv.ARTIFACTS)
WEIGHTS = {"korr_residual": ["residual.safetensors"]}


def _weight_files(path: Path, doc: dict) -> list[Path]:
    if doc["type"] == "lerobot_act":
        return [path / n for n in doc["files"] if n.startswith("lerobot/") and n.endswith(".safetensors")]
    return [path / n for n in WEIGHTS.get(doc["type"], ["model.safetensors"])]


def _tensor_sha(path: Path) -> str:
    import hashlib

    doc = json.loads((path / "config.json").read_text())
    digests: dict[str, str] = {}
    for f in sorted(_weight_files(path, doc)):
        prefix = f"{f.name}:" if doc["type"] == "lerobot_act" else ""
        digests.update({prefix + k: v for k, v in conv.tensor_digests(f).items()})
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("name", NAMES)
def test_shipped_artifact_is_the_converted_one(name: str) -> None:
    from latentstack.core.artifacts import artifact_type, load_artifact, resolve_target

    path = ROOT / "policies" / name
    rec = json.loads(RECORD.read_text())[name]
    art = load_artifact(path)  # format 2, every file's sha256 as listed
    assert rec["type"] == art.type and rec["tensors_equal"] and rec["outputs_equal"]
    assert _tensor_sha(path) == rec["tensor_sha256"]
    text = (path / "config.json").read_text()
    assert "/tmp/" not in text and "/work/" not in text and "/home/" not in text
    if art.source is not None:  # a derived artifact names its source by repo-relative path + fingerprint
        art.check_source(ROOT / art.source["path"])
    loaded = resolve_target(artifact_type(art.type).load)(path, device="cpu")
    assert loaded is not None


def _legacy(name: str, dest: Path) -> Path:
    """``policies/<name>`` as it was at ``LEGACY_REV`` (from git history), under ``dest``."""
    try:
        files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", LEGACY_REV, f"policies/{name}"],
                               capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with {LEGACY_REV} not available")
    if not files:
        pytest.skip(f"policies/{name} not in {LEGACY_REV}")
    out = dest / name
    for f in files:
        target = out / Path(f).relative_to(f"policies/{name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{LEGACY_REV}:{f}"], capture_output=True, check=True)
        target.write_bytes(blob.stdout)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_legacy_artifact_converts_bit_identically(name: str, tmp_path: Path) -> None:
    old = _legacy(name, tmp_path)
    rec = conv.ARTIFACTS[name](old)  # raises unless tensors are equal and outputs bit-identical
    assert rec["tensors_equal"] and rec["outputs_equal"]
    assert rec["tensor_sha256"] == json.loads(RECORD.read_text())[name]["tensor_sha256"]
    shipped = json.loads((ROOT / "policies" / name / "config.json").read_text())
    assert json.loads((old / "config.json").read_text())["config"] == shipped["config"]


@pytest.mark.parametrize("name", ["lion_tiny_identity", "stereo_sa2_tiny", "korr_lift_base", "korr_toy_insertion_korr",
                                  "act_metaworld_mt6"])
def test_legacy_folder_is_refused_with_the_conversion_command(name: str, tmp_path: Path) -> None:
    from latentstack.core.artifacts import ArtifactError, artifact_type, resolve_target

    old = _legacy(name, tmp_path)
    new_type = json.loads((ROOT / "policies" / name / "config.json").read_text())["type"]
    with pytest.raises(ArtifactError, match="convert_artifacts.py"):
        resolve_target(artifact_type(new_type).load)(old, device="cpu")
    shutil.rmtree(old)
