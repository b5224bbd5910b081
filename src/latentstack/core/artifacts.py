"""The one artifact format for everything under ``policies/`` (DESIGN.md, "the model contract").

An artifact is a folder::

    config.json          {"type", "format_version", "config", "files": {name: sha256}, "source", "provenance", "extra"}
    *.safetensors        tensors; each header repeats type, format_version and the config the weights were saved with
    other files          (JSON side files, LeRobot processor files, ...) listed in "files" with their sha256
    CARD.md              rendered by latentstack.core.card (not hashed: a card may be re-rendered)

:func:`save_artifact` writes one, :func:`load_artifact` reads and verifies one. A loader refuses, with an
:class:`ArtifactError` naming what differs, a wrong or missing ``type`` / ``format_version``, a file whose sha256
differs from ``config.json``, a config that differs from the one the weights were saved with (outside the fields a
model declares free to edit, such as inference steps or device), and tensors whose names, shapes or dtypes do not
fit the model. Derived artifacts (quantized variants, conceptors, residual heads) name their ``source`` artifact
by repo-relative path and :func:`artifact_fingerprint`; :meth:`Artifact.check_source` refuses a different source.
Provenance names data and code by repo-relative path and content hash (:func:`describe_file`), never by an
absolute path of the machine that wrote it. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentstack.core.paths import portable_path, repo_relative, resolve_path

FORMAT_VERSION = 2  # v1: the per-component formats before the one artifact format (converted by scripts/)
CONFIG_NAME = "config.json"
CARD_NAME = "CARD.md"
_MAX_LISTED = 12
# Memory budget of one load: the bytes of the tensors an artifact's weight files declare (read from their
# safetensors headers, nothing loaded) must not exceed it. 2 GiB is ~100x the largest shipped artifact (the ACT
# one, 24 MB); a larger model raises it with the environment variable (bytes) or a loader's ``budget=``.
DEFAULT_MEMORY_BUDGET = 2 << 30
MEMORY_BUDGET_ENV = "LATENTSTACK_MEMORY_BUDGET"
_ST_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                   "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


class ArtifactError(ValueError):
    """An artifact that cannot be used as asked: malformed, tampered, or not the one expected."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_file(path: str | os.PathLike) -> dict[str, str]:
    """``{"path": repo-relative path, "sha256": ...}`` of a file, or of a folder (hash over its sorted files)."""
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f.relative_to(p).as_posix().encode())
            h.update(sha256_file(f).encode())
        digest = h.hexdigest()
    else:
        digest = sha256_file(p)
    return {"path": portable_path(p), "sha256": digest}


def artifact_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of an artifact's ``config.json``: it lists the sha256 of every weight/side file, so this one hash
    names the artifact's whole content (what a derived artifact records about its source)."""
    return sha256_file(Path(path) / CONFIG_NAME)


def listing(items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f" ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return "[" + ", ".join(shown) + "]" + more


def memory_budget(budget: int | None = None) -> tuple[int, str]:
    """(bytes, where the number came from): ``budget`` if given, else ``$LATENTSTACK_MEMORY_BUDGET``, else
    :data:`DEFAULT_MEMORY_BUDGET`."""
    if budget is not None:
        return int(budget), "budget argument"
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env:
        try:
            return int(float(env)), f"${MEMORY_BUDGET_ENV}"
        except ValueError:
            raise ValueError(f"${MEMORY_BUDGET_ENV}={env!r} is not a number of bytes") from None
    return DEFAULT_MEMORY_BUDGET, "default"


def safetensors_nbytes(path: str | os.PathLike) -> int:
    """Bytes of all tensors a safetensors file declares, from its header only (shapes x dtype sizes)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            sl = f.get_slice(k)
            n = 1
            for d in sl.get_shape():
                n *= int(d)
            total += n * _ST_DTYPE_BYTES.get(sl.get_dtype(), 8)
    return total


def check_memory_budget(paths: Iterable[str | os.PathLike], budget: int | None = None) -> int:
    """Refuse (:class:`ArtifactError`) weight files whose tensors together exceed the memory budget; returns
    their bytes. Called before a model is built or a tensor read, so an oversize artifact costs nothing."""
    limit, origin = memory_budget(budget)
    sizes = {str(p): safetensors_nbytes(p) for p in paths}
    total = sum(sizes.values())
    if total > limit:
        raise ArtifactError(
            f"weights of {total / 2**20:.1f} MiB exceed the memory budget of {limit / 2**20:.1f} MiB ({origin}; "
            f"raise it with ${MEMORY_BUDGET_ENV}=<bytes> or budget=): "
            + listing([f"{Path(p).name} {n / 2**20:.1f} MiB" for p, n in sizes.items()]))
    return total


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _source_ref(source: Path, out: Path) -> str:
    """How a derived artifact names its source: repo-relative inside the checkout (or an install's data),
    else relative to the derived artifact itself (``../base``): never an absolute path."""
    in_repo = repo_relative(source)
    if in_repo is not None:
        return in_repo
    rel = Path(os.path.relpath(source.resolve(), out.resolve())).as_posix()
    return rel if rel.startswith("../") else "./" + rel


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted: the writer keeps them in a hash map
    whose order changes from process to process, so without this the same save gives different bytes (and
    sha256) each run. Same length, same tensors; left alone if the header would not re-serialise exactly."""
    with open(path, "r+b") as fh:
        n = int.from_bytes(fh.read(8), "little")
        raw = fh.read(n)
        text = raw.decode("utf-8")
        head = json.loads(text)
        compact = {"separators": (",", ":"), "ensure_ascii": False}
        body = text.rstrip(" ")
        if json.dumps(head, **compact) != body or "__metadata__" not in head:
            return
        meta = head.pop("__metadata__")
        new = json.dumps({"__metadata__": dict(sorted(meta.items())), **head}, **compact)
        new_raw = new.encode("utf-8") + b" " * (n - len(body.encode("utf-8")))
        if len(new_raw) == n:
            fh.seek(8)
            fh.write(new_raw)


def _canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def save_artifact(
    out_dir: str | os.PathLike,
    *,
    type: str,
    config: Mapping[str, Any],
    tensors: Mapping[str, Mapping[str, Any]] | None = None,
    files: Mapping[str, bytes | str] | None = None,
    existing_files: Iterable[str] = (),
    source: str | os.PathLike | None = None,
    provenance: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an artifact folder; returns it.

    ``tensors``: file name -> {tensor name: tensor} (each written as safetensors, moved to CPU, contiguous);
    ``files``: file name -> bytes/text of side files; ``existing_files``: files already written into ``out_dir``
    by a library (e.g. LeRobot) that must be hashed too; ``source``: the artifact this one derives from (its
    repo-relative path and fingerprint are recorded).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    if config.get("type", type) != type:
        raise ArtifactError(f"config type {config.get('type')!r} != artifact type {type!r}")
    header = {"type": type, "format_version": str(FORMAT_VERSION), "config": _canonical(config)}
    hashes: dict[str, str] = {}
    for name, group in (tensors or {}).items():
        state = {k: v.detach().to("cpu").contiguous() for k, v in group.items()}
        tmp = out / (name + ".tmp")
        save_file(state, str(tmp), metadata=header)
        _sort_metadata(tmp)
        os.replace(tmp, out / name)
        hashes[name] = sha256_file(out / name)
    for name, data in (files or {}).items():
        _atomic_write_bytes(out / name, data.encode() if isinstance(data, str) else data)
        hashes[name] = sha256_file(out / name)
    for name in existing_files:
        if not (out / name).is_file():
            raise FileNotFoundError(f"save_artifact: {name} is not in {out}")
        hashes[name] = sha256_file(out / name)
    src = None
    if source is not None:
        sp = resolve_path(source)
        src = {"path": _source_ref(sp, out), "sha256": artifact_fingerprint(sp)}
    doc = {
        "type": type,
        "format_version": FORMAT_VERSION,
        "config": config,
        "files": dict(sorted(hashes.items())),
        "source": src,
        "provenance": dict(provenance or {}),
        "extra": dict(extra or {}),
    }
    _atomic_write_bytes(out / CONFIG_NAME, (json.dumps(doc, indent=2) + "\n").encode())
    return out


def add_files(path: str | os.PathLike, names: Iterable[str]) -> Path:
    """List files copied into an existing artifact folder (training logs, plots) in its ``config.json`` with their
    sha256, so the loader checks them too; returns the folder. Changes the artifact's fingerprint."""
    p = Path(path)
    doc = read_artifact_doc(p)
    for name in names:
        if not (p / name).is_file():
            raise FileNotFoundError(f"add_files: {name} is not in {p}")
        doc["files"][name] = sha256_file(p / name)
    doc["files"] = dict(sorted(doc["files"].items()))
    _atomic_write_bytes(p / CONFIG_NAME, (json.dumps(doc, indent=2) + "\n").encode())
    return p


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder (see the module docstring). ``config`` is the stored config dict."""

    path: Path
    type: str
    config: dict[str, Any]
    files: dict[str, str]
    source: dict[str, str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return artifact_fingerprint(self.path)

    def file(self, name: str) -> Path:
        if name not in self.files:
            raise ArtifactError(f"artifact {self.path} lists no file {name!r} (files: {sorted(self.files)})")
        return self.path / name

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def check_budget(self, names: Iterable[str] | None = None, budget: int | None = None) -> int:
        """Refuse weight files (default: every ``*.safetensors`` the artifact lists) over the memory budget
        (:func:`check_memory_budget`); returns their bytes. Reads headers only."""
        names = [n for n in self.files if n.endswith(".safetensors")] if names is None else list(names)
        return check_memory_budget([self.file(n) for n in names], budget)

    def tensors(self, name: str = "model.safetensors", *, device: str = "cpu", free_fields: Iterable[str] = (),
                defaults: Mapping[str, Any] | None = None, budget: int | None = None) -> dict[str, Any]:
        """The tensors of one weight file, after checking its header against ``config.json``: same type and
        version, and the same config outside ``free_fields`` (runtime fields a user may edit). ``defaults``:
        values of config fields added after the artifact was written (a field missing on one side reads as its
        default, so an older artifact still loads). Refused before any tensor is read if the file's tensors
        exceed the memory budget (``budget`` bytes, default :func:`memory_budget`)."""
        from safetensors import safe_open

        self.check_budget([name], budget)
        problems: list[str] = []
        out: dict[str, Any] = {}
        with safe_open(str(self.file(name)), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            if meta.get("type") != self.type or meta.get("format_version") != str(FORMAT_VERSION):
                problems.append(
                    f"{name} header says type {meta.get('type')!r} v{meta.get('format_version')!r}, "
                    f"config.json {self.type!r} v{FORMAT_VERSION}"
                )
            if "config" in meta:
                saved = {**(defaults or {}), **json.loads(meta["config"])}
                now = {**(defaults or {}), **self.config}
                free = set(free_fields)
                diff = sorted(k for k in set(saved) | set(now) if k not in free and saved.get(k) != now.get(k))
                if diff:
                    problems.append(
                        "config.json differs from the config the weights were saved with in fields "
                        + listing([f"{k}: saved {saved.get(k)!r} vs config.json {now.get(k)!r}" for k in diff])
                    )
            else:
                problems.append(f"{name} header has no config (not written by save_artifact)")
            for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                out[k] = f.get_tensor(k)
        if problems:
            raise ArtifactError(f"artifact {self.path} is inconsistent: " + "; ".join(problems))
        return out

    def check_source(self, source: str | os.PathLike) -> None:
        """Refuse a source artifact other than the one this derived artifact was made from."""
        if self.source is None:
            raise ArtifactError(f"artifact {self.path} names no source artifact")
        fp = artifact_fingerprint(source)
        if fp != self.source["sha256"]:
            raise ArtifactError(
                f"artifact {self.path} was derived from {self.source['path']} (sha256 {self.source['sha256'][:12]}…); "
                f"{source} has sha256 {fp[:12]}…"
            )

    def source_path(self) -> Path:
        """The recorded source, resolved like a user-given path (cwd, then the checkout / installed data)."""
        if self.source is None:
            raise ArtifactError(f"artifact {self.path} names no source artifact")
        ref = self.source["path"]
        if ref.startswith(("./", "../")):  # recorded relative to this artifact (source outside the checkout)
            return (self.path / ref).resolve()
        return resolve_path(ref)


def read_artifact_doc(path: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of an artifact, checked for type and format version only (no hashing)."""
    p = Path(path)
    cfg = p / CONFIG_NAME
    if not cfg.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in artifact folder {p}")
    try:
        doc = json.loads(cfg.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{cfg}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        # every pre-format-2 layout lacks "type" (some named a "format", stereo's was a bare config)
        legacy = (f" (legacy format {doc['format']!r}" if isinstance(doc, dict) and "format" in doc
                  else " (not a format-2 artifact; if it is an older one") + \
            ": convert it with `python scripts/convert_artifacts.py`)"
        raise ArtifactError(f"{cfg}: no artifact 'type'{legacy}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{cfg}: format_version {doc.get('format_version')!r} unsupported (this code reads {FORMAT_VERSION}; "
            "convert old artifacts with `python scripts/convert_artifacts.py`)"
        )
    if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("files"), dict):
        raise ArtifactError(f"{cfg}: missing 'config' or 'files' object")
    return doc


def is_artifact(path: str | os.PathLike, type: str | None = None) -> bool:
    """True for a folder holding a current-format artifact (of ``type`` when given); never raises."""
    try:
        doc = read_artifact_doc(path)
    except (OSError, ArtifactError):
        return False
    return type is None or doc["type"] == type


def load_artifact(path: str | os.PathLike, *, expect_type: str | Iterable[str] | None = None,
                  verify: bool = True) -> Artifact:
    """Read and verify an artifact folder: type (``expect_type``), version, and the sha256 of every file."""
    p = resolve_path(path)
    doc = read_artifact_doc(p)
    if expect_type is not None:
        allowed = {expect_type} if isinstance(expect_type, str) else set(expect_type)
        if doc["type"] not in allowed:
            raise ArtifactError(f"artifact {p} is type {doc['type']!r}, expected {sorted(allowed)}")
    if verify:
        bad: list[str] = []
        for name, digest in doc["files"].items():
            f = p / name
            if not f.is_file():
                bad.append(f"{name} missing")
            elif sha256_file(f) != digest:
                bad.append(f"{name} sha256 differs from config.json")
        if bad:
            raise ArtifactError(f"artifact {p} refused: " + "; ".join(bad))
    return Artifact(
        path=p,
        type=doc["type"],
        config=doc["config"],
        files=doc["files"],
        source=doc.get("source"),
        provenance=doc.get("provenance") or {},
        extra=doc.get("extra") or {},
    )


# ----------------------------------------------------------------------------- artifact types
@dataclass(frozen=True)
class ArtifactType:
    """How to load an artifact of one ``type``, named by ``"module:attr"`` strings so that finding the loader
    imports only that model's stack (the entries live in :mod:`latentstack.core.registry`).

    ``load(path, *, device=None, **overrides)`` returns the loaded object (a policy when ``kind`` is
    ``"policy"``); ``random(path, *, seed=None, **overrides)``, for policies, its untrained twin (same config
    and normalisation, fresh weights): the evaluation's baseline."""

    name: str
    load: str
    kind: str = "policy"
    random: str | None = None


ARTIFACT_TYPES: dict[str, ArtifactType] = {}


def register_artifact_type(name: str, load: str, *, kind: str = "policy", random: str | None = None,
                           overwrite: bool = False) -> ArtifactType:
    """Register (lazily, by ``"module:attr"``) the loader of artifacts of type ``name``."""
    for target in (load, random):
        if target is not None and ":" not in target:
            raise ValueError(f"artifact loader {target!r} is not 'package.module:attr'")
    entry = ArtifactType(name, load, kind, random)
    prev = ARTIFACT_TYPES.get(name)
    if prev is not None and prev != entry and not overwrite:
        raise ValueError(f"artifact type {name!r} already registered ({prev.load})")
    ARTIFACT_TYPES[name] = entry
    return entry


def _fill_registry() -> None:
    import latentstack.core.registry  # noqa: F401 (registers every known type; imports no model stack)


def artifact_type(name: str) -> ArtifactType:
    """The registered :class:`ArtifactType` of ``name`` (a clear error listing the known ones)."""
    _fill_registry()
    try:
        return ARTIFACT_TYPES[name]
    except KeyError:
        raise ArtifactError(f"unknown artifact type {name!r}; known: {sorted(ARTIFACT_TYPES)}") from None


def resolve_target(target: str) -> Any:
    """The object named by ``"package.module:attr[.attr]"`` (imports the module)."""
    import importlib

    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def check_state_dict(expected: Mapping[str, Any], tensors: Mapping[str, Any]) -> list[str]:
    """Problems loading ``tensors`` into a module whose ``state_dict()`` is ``expected``: missing / unexpected
    names, shape or dtype mismatches (empty list = loads strictly)."""
    problems: list[str] = []
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing keys {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {listing(unexpected)}")
    mismatched = []
    for k in sorted(set(tensors) & set(expected)):
        t, want = tensors[k], expected[k]
        if tuple(t.shape) != tuple(want.shape) or t.dtype != want.dtype:
            mismatched.append(f"{k}: file {tuple(t.shape)} {t.dtype} vs model {tuple(want.shape)} {want.dtype}")
    if mismatched:
        problems.append(f"shape/dtype mismatch {listing(mismatched)}")
    return problems


__all__ = [
    "ARTIFACT_TYPES",
    "CARD_NAME",
    "CONFIG_NAME",
    "DEFAULT_MEMORY_BUDGET",
    "FORMAT_VERSION",
    "MEMORY_BUDGET_ENV",
    "Artifact",
    "ArtifactError",
    "ArtifactType",
    "add_files",
    "artifact_fingerprint",
    "artifact_type",
    "check_memory_budget",
    "check_state_dict",
    "describe_file",
    "is_artifact",
    "load_artifact",
    "memory_budget",
    "read_artifact_doc",
    "register_artifact_type",
    "resolve_target",
    "safetensors_nbytes",
    "save_artifact",
    "sha256_file",
]
