"""The one artifact format (core/artifacts.py): what is written, and every refusal of a loader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentstack.core.artifacts import (
    FORMAT_VERSION,
    ArtifactError,
    add_files,
    artifact_fingerprint,
    artifact_type,
    check_state_dict,
    describe_file,
    is_artifact,
    load_artifact,
    resolve_target,
    save_artifact,
    sha256_file,
)

CONFIG = {"width": 4, "depth": 2, "steps": 10}


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(4, 4, generator=g), "b": torch.zeros(4), "n": torch.arange(3)}


def _save(out: Path, **kw) -> Path:
    args = {"type": "toy", "config": CONFIG, "tensors": {"model.safetensors": _tensors()},
            "files": {"side.json": '{"a": 1}'}} | kw
    return save_artifact(out, **args)


def _edit(path: Path, fn) -> None:
    doc = json.loads((path / "config.json").read_text())
    fn(doc)
    (path / "config.json").write_text(json.dumps(doc))


def test_roundtrip_and_layout(tmp_path):
    out = _save(tmp_path / "a", provenance={"data": describe_file(Path(__file__))}, extra={"note": "x"})
    doc = json.loads((out / "config.json").read_text())
    assert doc["type"] == "toy" and doc["format_version"] == FORMAT_VERSION == 2
    assert doc["files"] == {"model.safetensors": sha256_file(out / "model.safetensors"),
                            "side.json": sha256_file(out / "side.json")}
    assert doc["provenance"]["data"] == {"path": "tests/core/test_artifacts.py", "sha256": sha256_file(__file__)}
    art = load_artifact(out, expect_type="toy")
    t = art.tensors()
    assert all(torch.equal(t[k], v) for k, v in _tensors().items()) and set(t) == set(_tensors())
    assert art.read_json("side.json") == {"a": 1} and art.extra == {"note": "x"} and art.source is None
    assert art.fingerprint == artifact_fingerprint(out) == sha256_file(out / "config.json")
    assert is_artifact(out) and is_artifact(out, "toy") and not is_artifact(out, "vla")
    assert not is_artifact(tmp_path) and not is_artifact(tmp_path / "missing")


def test_add_files_hashes_copied_files(tmp_path):
    out = _save(tmp_path / "a")
    (out / "train_log.json").write_text("{}")
    fp = artifact_fingerprint(out)
    add_files(out, ["train_log.json"])
    assert load_artifact(out).files["train_log.json"] == sha256_file(out / "train_log.json")
    assert artifact_fingerprint(out) != fp
    (out / "train_log.json").write_text('{"edited": 1}')
    with pytest.raises(ArtifactError, match="train_log.json sha256 differs"):
        load_artifact(out)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        add_files(out, ["nope.png"])


def test_same_save_same_bytes(tmp_path):
    """The safetensors header's metadata is written in sorted order: a save is reproducible byte for byte."""
    code = ("import sys, torch; from latentstack.core.artifacts import save_artifact; "
            "save_artifact(sys.argv[1], type='toy', config={'z': 1, 'a': [1, 2], 'm': 'é'}, "
            "tensors={'m.safetensors': {'w': torch.arange(6.0)}})")
    for d in ("x", "y"):  # separate processes: the writer's hash-map order differs between them
        subprocess.run([sys.executable, "-c", code, str(tmp_path / d)], check=True, timeout=120)
    assert (tmp_path / "x" / "m.safetensors").read_bytes() == (tmp_path / "y" / "m.safetensors").read_bytes()
    assert load_artifact(tmp_path / "x").tensors("m.safetensors")["w"].tolist() == list(range(6))


def test_tampered_files_are_refused(tmp_path):
    out = _save(tmp_path / "a")
    bad = shutil.copytree(out, tmp_path / "flip")
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (bad / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="model.safetensors sha256 differs"):
        load_artifact(bad)
    bad = shutil.copytree(out, tmp_path / "side")
    (bad / "side.json").write_text('{"a": 2}')
    with pytest.raises(ArtifactError, match="side.json sha256 differs"):
        load_artifact(bad)
    bad = shutil.copytree(out, tmp_path / "gone")
    (bad / "side.json").unlink()
    with pytest.raises(ArtifactError, match="side.json missing"):
        load_artifact(bad)
    assert load_artifact(bad, verify=False).type == "toy"  # reading the doc alone does not hash


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(type="other"), r"is type 'other', expected \['toy'\]"),
    (lambda d: d.update(format_version=1), "format_version 1 unsupported .*convert_artifacts.py"),
    (lambda d: d.update(format_version=3), "format_version 3 unsupported"),
    (lambda d: d.pop("type"), "no artifact 'type'"),
    (lambda d: d.update(type=None, format="latentstack.policy"), "legacy format 'latentstack.policy': convert"),
    (lambda d: d.pop("files"), "missing 'config' or 'files'"),
])
def test_wrong_type_or_version_refused(tmp_path, edit, message):
    out = _save(tmp_path / "a")
    _edit(out, edit)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(out, expect_type="toy")


def test_edited_architecture_field_refused(tmp_path):
    out = _save(tmp_path / "a")
    _edit(out, lambda d: d["config"].update(depth=3))  # changes no tensor shape, the model would be wrong
    art = load_artifact(out)  # config.json is not itself hashed: the weights' header holds the saved config
    with pytest.raises(ArtifactError, match="depth: saved 2 vs config.json 3"):
        art.tensors()
    _edit(out, lambda d: d["config"].update(depth=2, steps=4))  # a runtime field the model declares free
    assert set(load_artifact(out).tensors(free_fields={"steps"})) == {"w", "b", "n"}
    with pytest.raises(ArtifactError, match="steps: saved 10 vs config.json 4"):
        load_artifact(out).tensors()


def test_fields_added_later_read_as_defaults(tmp_path):
    out = _save(tmp_path / "a")
    _edit(out, lambda d: d["config"].update(new_field=0))
    with pytest.raises(ArtifactError, match="new_field"):
        load_artifact(out).tensors()
    assert load_artifact(out).tensors(defaults={"new_field": 0})
    with pytest.raises(ArtifactError, match="new_field: saved 1 vs config.json 0"):
        load_artifact(out).tensors(defaults={"new_field": 1})


def test_weights_not_written_by_save_artifact_refused(tmp_path):
    out = _save(tmp_path / "a")
    save_file(load_file(str(out / "model.safetensors")), str(out / "model.safetensors"))  # no header
    _edit(out, lambda d: d["files"].update({"model.safetensors": sha256_file(out / "model.safetensors")}))
    with pytest.raises(ArtifactError, match="not written by save_artifact"):
        load_artifact(out).tensors()
    other = _save(tmp_path / "b", type="toy2")  # weights of another artifact type under this config.json
    shutil.copy(other / "model.safetensors", out / "model.safetensors")
    _edit(out, lambda d: d["files"].update({"model.safetensors": sha256_file(out / "model.safetensors")}))
    with pytest.raises(ArtifactError, match="header says type 'toy2'"):
        load_artifact(out).tensors()


def test_config_type_must_match(tmp_path):
    with pytest.raises(ArtifactError, match="config type 'a' != artifact type 'toy'"):
        _save(tmp_path / "a", config={**CONFIG, "type": "a"})
    with pytest.raises(FileNotFoundError, match="lib.bin"):
        _save(tmp_path / "b", existing_files=["lib.bin"])


def test_derived_artifact_names_its_source(tmp_path):
    base = _save(tmp_path / "base")
    derived = _save(tmp_path / "derived", type="toy_derived", source=base)
    art = load_artifact(derived)
    assert art.source == {"path": "../base", "sha256": artifact_fingerprint(base)}  # never an absolute path
    assert "/" + tmp_path.parts[1] not in (derived / "config.json").read_text()
    assert art.source_path() == base.resolve()
    art.check_source(base)
    other = _save(tmp_path / "other", config={**CONFIG, "steps": 11})
    with pytest.raises(ArtifactError, match=r"derived from \.\./base .*other has sha256"):
        art.check_source(other)
    _edit(base, lambda d: d["extra"].update(edited=True))  # any change to the source changes its fingerprint
    with pytest.raises(ArtifactError, match="derived from"):
        art.check_source(base)
    with pytest.raises(ArtifactError, match="names no source"):
        load_artifact(other).check_source(base)


def test_source_inside_the_checkout_is_repo_relative(tmp_path):
    shipped = Path(__file__).resolve().parents[2] / "policies" / "vla_metaworld_mt6"
    derived = _save(tmp_path / "d", type="toy_derived", source=shipped)
    art = load_artifact(derived)
    assert art.source["path"] == "policies/vla_metaworld_mt6" and art.source_path().resolve() == shipped
    art.check_source("policies/vla_metaworld_mt6")


def test_check_state_dict_messages():
    want = {"a": torch.zeros(2, 3), "b": torch.zeros(2), "c": torch.zeros(1)}
    got = {"a": torch.zeros(3, 2), "b": torch.zeros(2, dtype=torch.float64), "d": torch.zeros(1)}
    problems = " ".join(check_state_dict(want, got))
    assert "missing keys [c]" in problems and "unexpected keys [d]" in problems
    assert "a: file (3, 2) torch.float32 vs model (2, 3) torch.float32" in problems
    assert "b: file (2,) torch.float64 vs model (2,) torch.float32" in problems
    assert check_state_dict(want, dict(want)) == []


def test_type_table_resolves_lazily():
    vla = artifact_type("vla")
    assert vla.kind == "policy" and vla.load.endswith(":from_pretrained") and vla.random
    assert callable(resolve_target(vla.load)) and callable(resolve_target(artifact_type("vla_quantized").load))
    assert artifact_type("conceptor").kind == "conceptor" and callable(resolve_target(artifact_type("conceptor").load))
    with pytest.raises(ArtifactError, match="unknown artifact type 'nope'; known: .*'vla'"):
        artifact_type("nope")


def test_type_table_imports_no_model_stack():
    code = ("import sys; from latentstack.core.artifacts import artifact_type; "
            "from latentstack.core.config import known_config_types; artifact_type('vla_quantized'); "
            "assert 'vla' in known_config_types(); "
            "bad = [m for m in sys.modules if m.startswith(('latentstack.policies', 'latentstack.quant', "
            "'latentstack.steering', 'latentstack.perception', 'latentstack.koopman', 'torch'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
