"""Convert every shipped artifact under ``policies/`` to the one artifact format (format_version 2), in place,
and prove each conversion. Idempotent: an artifact already in format 2 is skipped.

    python scripts/convert_artifacts.py [NAME ...]     # NAME: e.g. vla_metaworld_mt6, lion_tiny (default: all)

For each converted artifact the record (``reports/artifacts/conversion.json``, merged by name; summary in
``reports/artifacts/summary.md``) holds:

- the sha256 of every tensor (dtype, shape, bytes) before and after: equal;
- outputs on fixed inputs from the old-format load (the legacy loading code, kept in ``scripts/_legacy_vla.py``
  and ``scripts/_convert_perception.py``) and from the new-format load, in the same process: bit-identical
  (``torch.equal``); their sha256 is recorded for reference (float outputs are machine-specific);
- the new artifact's fingerprint and, for derived artifacts, the source it names.

``CONVERTERS`` maps a legacy format to its converter; the VLA family (policy v1, QuantVLA v1, COAST v1) is
here, LION / stereo / KORR / LeRobot ACT are in ``scripts/_convert_perception.py`` (``ARTIFACTS``, by name).
Provenance written by the conversion names files by repo-relative path and sha256, never a machine's path.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
# LATENTSTACK_ROOT: convert a copy of the checkout (a dry run); the code always comes from this checkout
ROOT = Path(os.environ.get("LATENTSTACK_ROOT", HERE)).resolve()
sys.path.insert(0, str(HERE / "scripts"))
sys.path.insert(0, str(HERE / "src"))

import _convert_perception as perception
import _legacy_vla as legacy
import torch

RECORD = ROOT / "reports" / "artifacts" / "conversion.json"
SUMMARY = RECORD.parent / "summary.md"
COMMAND = "python scripts/convert_artifacts.py"
# scratch paths that made the weak VLA, as the repo's commands name them (its CARD.md: `data/demos20`)
PATH_FIXES = {"/tmp/vla_scratch/": "data/"}


def tensor_digests_dir(files: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in files:
        for k, v in perception.tensor_digests(f).items():
            if k in out:
                raise ValueError(f"tensor {k} in two files of one artifact")
            out[k] = v
    return out


def _out_digest(t: torch.Tensor) -> str:
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fix_paths(obj: Any) -> Any:
    """Replace scratch paths of the machine that made an artifact by the repo-relative names."""
    if isinstance(obj, str):
        for old, new in PATH_FIXES.items():
            obj = obj.replace(old, new)
        return obj
    if isinstance(obj, dict):
        return {k: _fix_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_paths(v) for v in obj]
    return obj


def _record(name: str, path: Path, fmt: str, before: dict[str, str], after: dict[str, str],
            out_old: dict[str, torch.Tensor], out_new: dict[str, torch.Tensor], **more: Any) -> dict[str, Any]:
    from latentstack.core.artifacts import artifact_fingerprint
    from latentstack.core.paths import portable_path

    if before != after:
        raise AssertionError(f"{name}: tensors changed: {sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))[:8]}")
    cmp = perception.compare_outputs(out_old, out_new)  # raises unless torch.equal for every output
    doc = json.loads((path / "config.json").read_text())
    return {"artifact": portable_path(path), "type": doc["type"], "from_format": fmt,
            "format_version": doc["format_version"], "fingerprint": artifact_fingerprint(path),
            "source": doc.get("source"), "tensors": len(before), "tensors_equal": True,
            "tensor_sha256": hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest(),
            "tensor_digests": before, **cmp,
            "outputs_sha256": {k: _out_digest(v) for k, v in sorted(out_new.items())},
            "torch": torch.__version__, **more}


# ----------------------------------------------------------------------------------- VLA
def _vla_outputs(policy: Any) -> dict[str, torch.Tensor]:
    batch = legacy.fixed_batch(policy.config)
    return {"chunk_seed0": legacy.chunk(policy, batch, 0), "chunk_seed1": legacy.chunk(policy, batch, 1)}


def convert_vla(path: Path, old: Path) -> dict[str, Any]:
    """policy v1 -> type "vla": same tensors (re-written with the v2 header), config + hashed side files."""
    from safetensors.torch import load_file

    from latentstack.core.artifacts import describe_file, save_artifact
    from latentstack.core.card import with_provenance
    from latentstack.policies.checkpoint import from_pretrained
    from latentstack.policies.vla.configuration_vla import VLAConfig

    doc = json.loads((old / "config.json").read_text())
    policy_old = legacy.load_legacy_vla(old)
    out_old = _vla_outputs(policy_old)
    before = tensor_digests_dir([old / "model.safetensors"])
    extra = _fix_paths(dict(doc.get("extra") or {}))
    provenance: dict[str, Any] = {"converted_from": {"format": f"{legacy.VLA_FORMAT}/1",
                                                     "config_sha256": _sha(old / "config.json"),
                                                     "fingerprint_v1": legacy.legacy_fingerprint(old)}}
    side = [n for n in ("train_log.json", "loss_curve.png", "demos_recording.json") if (path / n).is_file()]
    if "train_log.json" in side:
        log = json.loads((path / "train_log.json").read_text())
        fixed = _fix_paths(log)
        if fixed != log:  # only path strings change; numbers stay
            (path / "train_log.json").write_text(json.dumps(fixed, indent=2) + "\n")
    dataset = extra.pop("dataset", None)
    if dataset:
        ds = ROOT / dataset
        provenance["dataset"] = describe_file(ds) if ds.exists() else {
            "path": dataset, "sha256": None,
            "note": "demonstrations not kept in the repository; re-recorded by the command on the card"}
    extra.setdefault("num_parameters", doc.get("num_parameters"))
    (path / "config.json").unlink()
    save_artifact(path, type="vla", config=VLAConfig.from_dict(doc["config"]).to_dict(),
                  tensors={"model.safetensors": load_file(str(old / "model.safetensors"))},
                  existing_files=side, provenance=provenance, extra=extra)
    _recard(path, with_provenance)
    out_new = _vla_outputs(from_pretrained(path))
    after = tensor_digests_dir([path / "model.safetensors"])
    return _record(path.name, path, f"{legacy.VLA_FORMAT}/1", before, after, out_old, out_new)


# ----------------------------------------------------------------------------------- QuantVLA
def convert_quant(path: Path, old: Path, legacy_root: Path) -> dict[str, Any]:
    """quant v1 (card.json) -> type "vla_quantized" with source = the converted "vla" artifact."""
    from safetensors.torch import load_file

    from latentstack.core.artifacts import save_artifact
    from latentstack.core.card import write_card
    from latentstack.quant.artifact import ATM_OHB, TYPE, WEIGHTS, load_quantized, render_quant_card

    card = json.loads((old / "card.json").read_text())
    src_rel = card["source"]
    old_src = legacy_root / src_rel
    if not old_src.is_dir():
        old_src = _legacy_copy(src_rel, legacy_root)
    if legacy.legacy_fingerprint(old_src) != card["source_fingerprint"]:
        raise AssertionError(f"{path}: its card's source fingerprint is not the legacy {src_rel}")
    src = ROOT / src_rel
    if legacy.legacy_kind(src) is not None:
        raise RuntimeError(f"convert {src_rel} before {path.name}")
    q_old, _ = legacy.load_legacy_quantized(old, old_src, impl="torch")
    batch = legacy.fixed_batch(q_old.config)
    out_old = {"chunk_seed0": legacy.chunk(q_old, batch, 0)}
    before = tensor_digests_dir([old / WEIGHTS])
    config_keys = ("execution", "layout", "preset", "replaced", "layer_classes", "atm_ohb", "calibration")
    config = {k: card[k] for k in config_keys}
    skip = {"format", "format_version", "source", "source_fingerprint", *config_keys}
    extra = {k: v for k, v in card.items() if k not in skip}
    files = {ATM_OHB: (old / ATM_OHB).read_bytes()} if (old / ATM_OHB).is_file() else {}
    provenance = {"converted_from": {"format": f"{legacy.QUANT_FORMAT}/1", "card_sha256": _sha(old / "card.json"),
                                     "source_fingerprint_v1": card["source_fingerprint"]}}
    old_card = (old / "CARD.md").read_text() if (old / "CARD.md").is_file() else ""
    (path / "card.json").unlink()
    save_artifact(path, type=TYPE, config=config, tensors={WEIGHTS: load_file(str(old / WEIGHTS))}, files=files,
                  source=src, provenance=provenance, extra=extra)
    doc = json.loads((path / "config.json").read_text())
    doc["extra"]["memory"]["file_bytes"] = (path / WEIGHTS).stat().st_size  # the v2 header is longer
    (path / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
    # the summary lines are re-rendered from config.json; the sections after them (scores) are kept as written
    details = old_card.split("\n## ", 1)[1] if "\n## " in old_card else ""
    write_card(path, render_quant_card(doc, ["## " + details.rstrip("\n")] if details else None))
    q_new, _ = load_quantized(path, impl="torch")
    out_new = {"chunk_seed0": legacy.chunk(q_new, batch, 0)}
    after = tensor_digests_dir([path / WEIGHTS])
    return _record(path.name, path, f"{legacy.QUANT_FORMAT}/1", before, after, out_old, out_new,
                   file_bytes={"v1": card["memory"]["file_bytes"], "v2": doc["extra"]["memory"]["file_bytes"]})


# ----------------------------------------------------------------------------------- COAST conceptors
CONCEPTOR_README_OLD = ("Steering artifacts (`<stem>.safetensors` holds the float32 C, C_success, C_failure and CAA "
                        "direction; `<stem>.json`\nis the card with")
CONCEPTOR_README_NEW = ("Steering artifacts (type `conceptor`, one folder per artifact: `conceptor.safetensors` holds the "
                        "float32 C, C_success, C_failure and CAA\ndirection; `config.json` is the card with")


def update_conceptor_readme(folder: Path) -> None:
    """The conceptor folder's CARD.md names the files of the new layout (same numbers)."""
    readme = folder / "CARD.md"
    if readme.is_file() and CONCEPTOR_README_OLD in readme.read_text():
        text = readme.read_text().replace(CONCEPTOR_README_OLD, CONCEPTOR_README_NEW)
        text = text.replace("Load them with `SteeringArtifact.load(stem)`", "Load them with `SteeringArtifact.load(folder)`")
        text = text.replace("give the stem to the policy node", "give the folder to the policy node")
        readme.write_text(text)


def convert_conceptor(stem: Path, old: Path) -> dict[str, Any]:
    """coast v1 (<stem>.json + <stem>.safetensors) -> type "conceptor" folder <stem>/, source = its policy."""
    from safetensors.torch import load_file

    from latentstack.core.artifacts import save_artifact
    from latentstack.core.card import write_card
    from latentstack.policies.checkpoint import from_pretrained
    from latentstack.steering.intervention import (
        ARTIFACT_TYPE,
        TENSORS,
        SteeringArtifact,
        render_conceptor_card,
    )

    card = json.loads(old.with_name(old.name + ".json").read_text())
    policy_rel = card["policy"]
    if legacy.legacy_kind(ROOT / policy_rel) is not None:
        raise RuntimeError(f"convert {policy_rel} before its conceptors")
    policy = from_pretrained(ROOT / policy_rel)  # the same (converted) base for both loads
    batch = legacy.fixed_batch(policy.config)

    def run(art: SteeringArtifact) -> dict[str, torch.Tensor]:
        with art.intervention(policy, beta=float(art.card.get("beta") or 0.1)):
            return {"steered_chunk_seed0": legacy.chunk(policy, batch, 0)}

    a_old = legacy.load_legacy_conceptor(old, expected_d=policy.config.d_model)
    out_old = run(a_old)
    before = tensor_digests_dir([old.with_name(old.name + ".safetensors")])
    config = {k: v for k, v in card.items() if k != "format"}
    provenance = {"converted_from": {"format": legacy.COAST_FORMAT,
                                     "card_sha256": _sha(old.with_name(old.name + ".json"))}}
    for suffix in (".json", ".safetensors"):
        stem.with_name(stem.name + suffix).unlink()
    save_artifact(stem, type=ARTIFACT_TYPE, config=config,
                  tensors={TENSORS: load_file(str(old.with_name(old.name + ".safetensors")))},
                  source=ROOT / policy_rel, provenance=provenance)
    write_card(stem, render_conceptor_card(stem))
    update_conceptor_readme(stem.parent)
    a_new = SteeringArtifact.load(stem, expected_d=policy.config.d_model, source=ROOT / policy_rel)
    out_new = run(a_new)
    after = tensor_digests_dir([stem / TENSORS])
    return _record(stem.name, stem, legacy.COAST_FORMAT, before, after, out_old, out_new)


# ----------------------------------------------------------------------------------- driver
def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _recard(path: Path, with_provenance: Callable[[str, Any], str]) -> None:
    """Keep the card's text (its numbers do not change), refresh its provenance block."""
    card = path / "CARD.md"
    if card.is_file():
        text = card.read_text().replace("__paper.*`", "__paper/`")  # a conceptor is a folder now
        card.write_text(with_provenance(text, json.loads((path / "config.json").read_text())))


def _legacy_copy(rel: str, legacy_root: Path) -> Path:
    """The legacy files of ``rel`` under ``legacy_root``: from the working tree while still legacy, else from
    git history (``_legacy_vla.LEGACY_REV``)."""
    src = ROOT / rel
    dest = legacy_root / rel
    if legacy.legacy_kind(src) is not None:
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            for suffix in (".json", ".safetensors"):
                shutil.copy2(src.with_name(src.name + suffix), dest.with_name(dest.name + suffix))
        return dest
    return legacy.legacy_from_git(ROOT, rel, legacy_root)


# legacy format -> converter; VLA_ARTIFACTS lists the VLA family in conversion order (sources first)
CONVERTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "vla": convert_vla,
    "quant": convert_quant,
    "coast": convert_conceptor,
}
VLA_ARTIFACTS: list[str] = ["vla_metaworld_mt6", "vla_metaworld_mt6_weak", "vla_metaworld_mt6_w4a8"]
CONCEPTOR_DIRS: list[str] = ["vla_metaworld_mt6_weak/conceptors"]


def _vla_family() -> list[str]:
    names = list(VLA_ARTIFACTS)
    for d in CONCEPTOR_DIRS:
        folder = ROOT / "policies" / d
        stems = {p.name[: -len(".json")] for p in folder.glob("*.json")} | {
            p.name for p in folder.iterdir() if (p / "config.json").is_file()}
        names += [f"{d}/{s}" for s in sorted(stems)]
    return names


def convert_vla_family(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    legacy_root = Path(tempfile.mkdtemp(prefix="legacy_vla_"))
    for name in _vla_family():
        if names and name not in names and name.split("/")[0] not in names:
            continue
        rel = f"policies/{name}"
        kind = legacy.legacy_kind(ROOT / rel)
        if kind is None:
            print(f"{name}: already format 2, skipped")
            continue
        old = _legacy_copy(rel, legacy_root)
        conv = CONVERTERS[kind]
        rec = conv(ROOT / rel, old, legacy_root) if kind == "quant" else conv(ROOT / rel, old)
        done[name] = rec
        print(f"{name}: {rec['tensors']} tensors equal, outputs bit-identical ({', '.join(rec['outputs_compared'])})")
    return done


# ----------------------------------------------------------------------------------- report provenance
# Scratch paths of the machines that ran the studies -> the names the committed commands use (first match wins:
# longer paths first). The COAST study's scratch folder is data/coast in scripts/coast_study.sh; its preliminary
# run used another one; the weak VLA was trained in a scratch folder and shipped as policies/vla_metaworld_mt6_weak
# (its card); the preliminary conceptor was shipped under policies/vla_metaworld_mt6_weak/conceptors (its card).
_WEAK_CONCEPTOR = "policies/vla_metaworld_mt6_weak/conceptors/all__expert.layer2__global__a10__paper"
REPORT_PATH_FIXES: list[tuple[str, dict[str, str], str | None]] = [
    ("reports/coast/*.json", {"/tmp/coast2/": "data/coast/"}, "data/coast/rollouts.safetensors"),
    *((f"reports/coast/preliminary/*.{ext}", {
        "/tmp/coast/conceptors/all__expert.layer2__global__a10__paper": _WEAK_CONCEPTOR,
        "/tmp/vla_scratch/mt6_a/policy": "policies/vla_metaworld_mt6_weak",
        "/tmp/coast/": "data/coast_preliminary/"}, "data/coast_preliminary/rollouts.safetensors") for ext in ("json", "md")),
    ("reports/quantvla/stdout.txt", {"/work/main/reports/": "reports/"}, None),
]


def _replace_paths(text: str, fixes: dict[str, str]) -> str:
    for old, rel in fixes.items():
        text = text.replace(old, rel)
    return text


def _report_provenance(doc: dict[str, Any], fixes: dict[str, str], rollouts: str) -> dict[str, Any]:
    from latentstack.core.artifacts import artifact_fingerprint, is_artifact

    prov: dict[str, Any] = {"paths": ("scratch paths of the machine that ran the study are written as the committed "
                                      "commands name them: " + ", ".join(fixes.values()))}
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    policy = doc.get("policy") or cfg.get("policy")
    if isinstance(policy, dict):
        policy = policy.get("policy") or policy.get("path")
    if isinstance(policy, str) and is_artifact(ROOT / policy):
        prov["policy"] = {"path": policy, "sha256": artifact_fingerprint(ROOT / policy),
                          "note": "artifact fingerprint after conversion to format 2 (same tensors)"}
    prov["rollouts"] = {"path": rollouts, "sha256": None,
                        "note": "scratch file of the study, not kept (seeded: re-collected by its command)"}
    shipped = ROOT / "policies" / "vla_metaworld_mt6_weak" / "conceptors"
    prov["shipped_conceptors"] = {p.name: {"path": f"policies/vla_metaworld_mt6_weak/conceptors/{p.name}",
                                           "sha256": artifact_fingerprint(p)}
                                  for p in sorted(shipped.iterdir()) if is_artifact(p)}
    return prov


def fix_report_paths() -> list[str]:
    """Replace scratch paths of the machines that ran a study in its reports by the repo-relative names of the
    committed commands; JSON reports also record what the study used by repo-relative path and content hash
    (``provenance``). Idempotent: a fixed report is left alone."""
    changed: list[str] = []
    for pattern, fixes, rollouts in REPORT_PATH_FIXES:
        for f in sorted(ROOT.glob(pattern)):
            if not f.is_file():
                continue
            text = f.read_text()
            out = _replace_paths(text, fixes)
            if f.suffix == ".json" and out != text and rollouts is not None:
                doc = json.loads(out)
                if isinstance(doc, dict) and "provenance" not in doc:
                    doc["provenance"] = _report_provenance(doc, fixes, rollouts)
                    out = json.dumps(doc, indent=2) + ("\n" if text.endswith("\n") else "")
            if out != text:  # compared as text: the reports hold NaN, which never equals itself
                f.write_text(out)
                changed.append(str(f.relative_to(ROOT)))
    return changed


def write_summary(record: Path = RECORD, summary: Path = SUMMARY) -> None:
    doc = json.loads(record.read_text())
    lines = ["# Artifact conversion to format 2", "",
             f"Command: `{COMMAND}` (idempotent; converts every shipped artifact under `policies/` in place).", "",
             ("For each artifact: every tensor's sha256 (dtype, shape, bytes) before = after, and outputs on fixed "
              "inputs from the old-format load (legacy loading code) and the new-format load in the same process are "
              "bit-identical (`torch.equal`). Full record: `conversion.json`. "
              "`tests/policies/test_artifact_conversion.py` keeps this proof for the VLA."), "",
             "| artifact | from | type | tensors equal | outputs compared (bit-identical) | fingerprint |",
             "|---|---|---|---|---|---|"]
    for name, r in sorted(doc.items()):
        if not isinstance(r, dict) or "type" not in r:
            continue
        outs = ", ".join(f"{k} {tuple(v)}" for k, v in r.get("outputs_compared", {}).items())
        ok = "yes" if r.get("outputs_equal") else "NO"
        lines.append(f"| `{r['artifact']}` | {r['from_format']} | `{r['type']}` | {r['tensors']} "
                     f"{'yes' if r.get('tensors_equal') else 'NO'} | {ok}: {outs} | `{r['fingerprint'][:12]}…` |")
    lines += ["", "The same command replaces scratch paths of the machines that ran a study by the repo-relative names "
              "of the committed commands (" + ", ".join(f"`{p}`" for p, _, _ in REPORT_PATH_FIXES) + "); the JSON "
              "reports gain a `provenance` block naming the policy and the shipped conceptors by path and artifact "
              "fingerprint (the scratch rollouts were not kept: recorded with `sha256: null`)."]
    summary.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="artifact names under policies/ (default: all)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # same op order in both loads; small models
    done = convert_vla_family(a.names or None)
    if done:
        for r in done.values():
            r["machine"] = {"python": platform.python_version(), "torch": torch.__version__,
                            "processor": platform.machine()}
        perception.merge_record(done, RECORD)
    rest = [n for n in (a.names or list(perception.ARTIFACTS)) if n in perception.ARTIFACTS]
    if rest:
        perception.main(rest)
    if (done or rest) and RECORD.is_file():  # nothing converted: nothing written (idempotent)
        write_summary()
    for f in fix_report_paths():
        print(f"{f}: scratch paths replaced by repo-relative names + hashes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
