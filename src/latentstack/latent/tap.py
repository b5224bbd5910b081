"""Tap: read latent states at named sites, in memory or streamed to safetensors shards.

Hooks run in registration order, so a Tap sees a site's value as left by the hooks
registered before it: a Tap entered *inside* an ``Intervention`` on the same site records
the intervened value; a Tap entered *outside* (before) it records the original value.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .context import current_annotations
from .site import Site, SiteSpec, get_value, resolve_sites

if TYPE_CHECKING:  # typing.Self is Python >= 3.11: imported for type checkers only
    from typing import Self

_SUFFIX = ".tap.safetensors"


@dataclass
class TapRecord:
    site: str
    value: torch.Tensor
    call_index: int
    meta: dict[str, Any] = field(default_factory=dict)


def _jsonable(x: Any) -> Any:
    """Annotation values go into JSON metadata; scalars from numpy/torch become Python numbers."""
    if hasattr(x, "item") and getattr(x, "ndim", 0) == 0:
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


Reduce = Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]


class Tap:
    """Records ``value.detach().clone()`` of every call at each site, with its annotations.

    ``to=None`` keeps records in ``self.records``; ``to=dir`` writes one safetensors shard
    per ``shard_size`` records per site (read back with :func:`load_tap_shards`).
    ``when(meta)`` filters calls; ``call_index`` counts all calls at a site, recorded or not.
    ``reduce(value, meta) -> Tensor`` (one callable, or ``{site name: callable}`` for some sites)
    records a statistic of the value instead of the value itself (e.g. an RMS or a per-channel
    max over a long calibration run, without keeping every activation). An ``optional`` site
    (see :class:`Site`) records nothing for a call that did not pass its value.
    """

    def __init__(self, model: nn.Module, sites: SiteSpec = None, to: str | Path | None = None,
                 shard_size: int = 256, detach: bool = True,
                 when: Callable[[dict[str, Any]], bool] | None = None,
                 reduce: Reduce | Mapping[str, Reduce] | None = None) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.model, self.sites = model, resolve_sites(model, sites)
        self.to = None if to is None else Path(to)
        self.shard_size, self.detach, self.when = shard_size, detach, when
        if isinstance(reduce, Mapping):
            unknown = set(reduce) - set(self.sites)
            if unknown:
                raise KeyError(f"reduce names sites not in this Tap: {sorted(unknown)}; sites: {list(self.sites)}")
            self.reduce: dict[str, Reduce] = dict(reduce)
        else:
            self.reduce = {} if reduce is None else dict.fromkeys(self.sites, reduce)
        self.records: dict[str, list[TapRecord]] = {n: [] for n in self.sites}
        self._calls = dict.fromkeys(self.sites, 0)
        self._shards = dict.fromkeys(self.sites, 0)
        self._handles: list[Any] = []

    def __enter__(self) -> Self:
        if self._handles:
            raise RuntimeError("Tap is already active")
        if self.to is not None:
            self.to.mkdir(parents=True, exist_ok=True)
            if any(self.to.glob("*" + _SUFFIX)):
                raise FileExistsError(f"{self.to} already holds tap shards; use an empty directory")
        try:
            for name, site in self.sites.items():
                module = site.resolve(self.model)
                if site.needs_kwargs:
                    h = module.register_forward_pre_hook(
                        lambda m, a, kw, _n=name, _s=site: self._record(_n, _s, a, kwargs=kw), with_kwargs=True)
                elif site.kind == "input":
                    h = module.register_forward_pre_hook(lambda m, a, _n=name, _s=site: self._record(_n, _s, a))
                else:
                    h = module.register_forward_hook(lambda m, a, o, _n=name, _s=site: self._record(_n, _s, a, o))
                self._handles.append(h)
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()
        if self.to is not None:
            for name in self.sites:
                self._flush(name)

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _record(self, name: str, site: Site, args: tuple, output: Any = None,
                kwargs: dict[str, Any] | None = None) -> None:
        meta = {**current_annotations(), "call_index": self._calls[name]}
        self._calls[name] += 1
        if self.when is not None and not self.when(meta):
            return
        value = get_value(site, args, output, kwargs)
        if value is None:  # optional site, not passed in this call
            return
        fn = self.reduce.get(name)
        if fn is not None:
            value = fn(value.detach() if self.detach else value, meta)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"reduce for site {name!r} returned {type(value).__name__}, expected a Tensor")
        value = value.detach().clone() if self.detach else value.clone()
        self.records[name].append(TapRecord(name, value, meta["call_index"], meta))
        if self.to is not None and len(self.records[name]) >= self.shard_size:
            self._flush(name)

    def _flush(self, name: str) -> None:
        recs = self.records[name]
        if not recs:
            return
        k = self._shards[name]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        pos = list(self.sites).index(name)
        metadata = {
            "format": "latentstack.tap/1", "site": name, "shard": str(k),
            "records": json.dumps([{"call_index": r.call_index, "meta": r.meta} for r in recs], default=_jsonable),
        }
        tensors = {f"{i:06d}": r.value.detach().cpu().contiguous() for i, r in enumerate(recs)}
        save_file(tensors, str(self.to / f"{pos:03d}-{safe}-{k:05d}{_SUFFIX}"), metadata=metadata)
        self._shards[name] += 1
        self.records[name] = []

    def _all(self, name: str) -> list[TapRecord]:
        if name not in self.sites:
            raise KeyError(f"no site {name!r} in this Tap; sites: {list(self.sites)}")
        if self.to is None:
            return self.records[name]
        return load_tap_shards(self.to).get(name, []) + self.records[name]

    def stack(self, name: str) -> torch.Tensor:
        """All recorded values of one site stacked along a new leading dim (call order)."""
        recs = self._all(name)
        if not recs:
            raise ValueError(f"site {name!r} recorded nothing")
        return torch.stack([r.value for r in recs])

    def meta(self, name: str) -> list[dict[str, Any]]:
        return [r.meta for r in self._all(name)]


def load_tap_shards(directory: str | Path) -> dict[str, list[TapRecord]]:
    """Read every shard a Tap wrote in ``directory`` back into records, in call order."""
    shards: dict[str, list[tuple[int, list[TapRecord]]]] = {}
    for path in sorted(Path(directory).glob("*" + _SUFFIX)):
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            if md.get("format") != "latentstack.tap/1":
                continue
            name = md["site"]
            recs = [TapRecord(name, f.get_tensor(f"{i:06d}"), r["call_index"], r["meta"])
                    for i, r in enumerate(json.loads(md["records"]))]
        shards.setdefault(name, []).append((int(md["shard"]), recs))
    return {n: [r for _, recs in sorted(parts, key=lambda p: p[0]) for r in recs] for n, parts in shards.items()}
