"""A Site names one place inside an ``nn.Module`` where a latent state lives."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn


@dataclass(frozen=True)
class Site:
    """The output (or positional input ``index``, or keyword input ``key``) of the submodule at ``module_path``.

    ``module_path`` is the dotted name from ``nn.Module.named_modules()`` of the root the
    site is resolved against ("" is the root itself). ``index`` selects one element
    when the module returns (or takes) a tuple. For an input site, ``key`` names a keyword
    argument: the value is ``args[index]`` when the call passed that many positional arguments
    (only when ``index`` is given), else ``kwargs[key]`` — so one site covers ``f(q, k, v, mask)``
    and ``f(q, k, v, attn_mask=mask)``. ``optional=True``: a call without the value (absent, or
    None) is skipped — a Tap records nothing, an Intervention leaves it as is.
    """

    module_path: str
    kind: Literal["output", "input"] = "output"
    index: int | None = None
    description: str = ""
    key: str | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("output", "input"):
            raise ValueError(f"Site.kind must be 'output' or 'input', got {self.kind!r}")
        if self.key is not None and self.kind != "input":
            raise ValueError(f"Site.key names a keyword input; kind must be 'input', got {self.kind!r}")

    @property
    def needs_kwargs(self) -> bool:
        """True if reading this site needs the call's keyword arguments (hooks ``with_kwargs``)."""
        return self.kind == "input" and self.key is not None

    def resolve(self, root: nn.Module) -> nn.Module:
        try:
            return root.get_submodule(self.module_path)
        except AttributeError as exc:
            raise KeyError(
                f"site {self.module_path!r} not found in {type(root).__name__}; "
                f"known modules start with: {[n for n, _ in root.named_modules()][:8]}"
            ) from exc


LatentSites = Mapping[str, Site]
SiteSpec = Mapping[str, Site | str] | Sequence[Site | str] | None


def site_name(site: Site) -> str:
    """Default record name of an anonymous Site: its path, plus kind/index when not plain."""
    name = site.module_path or "<root>"
    if site.kind == "input":
        name += ":input"
    if site.index is None and site.key is not None:
        return f"{name}[{site.key}]"
    return name if site.index is None else f"{name}[{site.index}]"


def lookup_site(model: nn.Module, key: str | Site, sites: LatentSites | None = None) -> Site:
    """A Site for ``key``: a Site as is; a str as a name in ``sites`` (default
    ``model.latent_sites()``), else as a module path. Unknown names raise KeyError."""
    if isinstance(key, Site):
        key.resolve(model)
        return key
    if sites is None and callable(getattr(model, "latent_sites", None)):
        sites = model.latent_sites()
    sites = sites or {}
    if key in sites:
        return sites[key]
    if key in dict(model.named_modules()):
        return Site(key)
    raise KeyError(
        f"unknown latent site {key!r} for {type(model).__name__}; declared sites: {sorted(sites)}; "
        f"or give a module path from named_modules(), e.g. {[n for n, _ in model.named_modules()][1:9]}"
    )


def resolve_sites(model: nn.Module, spec: SiteSpec) -> dict[str, Site]:
    """Normalise every accepted ``sites`` form to ``{name: Site}`` (None = all declared sites)."""
    if spec is None:
        if not callable(getattr(model, "latent_sites", None)):
            raise ValueError(f"{type(model).__name__} declares no latent_sites(); pass sites explicitly")
        spec = model.latent_sites()
    if isinstance(spec, Mapping):
        out = {name: lookup_site(model, s) for name, s in spec.items()}
    else:
        out = {}
        for s in spec:
            site = lookup_site(model, s)
            out[s if isinstance(s, str) else site_name(site)] = site
    for site in out.values():
        site.resolve(model)
    return out


def _input_slot(site: Site, args: tuple, kwargs: Mapping[str, Any] | None) -> tuple[str, Any] | None:
    """Where an input site's value sits in this call: ``("arg", i)``, ``("kw", key)`` or None (absent)."""
    i = site.index if site.index is not None else (None if site.key is not None else 0)
    if i is not None and len(args) > i:
        return ("arg", i)
    if site.key is not None and kwargs is not None and site.key in kwargs:
        return ("kw", site.key)
    return None


def get_value(site: Site, args: tuple, output: Any = None, kwargs: Mapping[str, Any] | None = None
              ) -> torch.Tensor | None:
    """The tensor a site names: ``output`` (or ``output[index]``), ``args[index or 0]`` or ``kwargs[key]``.

    None only for an ``optional`` site whose value this call did not pass (or passed as None)."""
    if site.kind == "input":
        slot = _input_slot(site, args, kwargs)
        if slot is None:
            if site.optional:
                return None
            where = f"positional input {site.index or 0}" if site.key is None else f"input {site.key!r}"
            raise ValueError(f"site {site.module_path!r} reads {where}, but the call passed {len(args)} "
                             f"positional argument(s) and keywords {sorted(kwargs or {})}")
        value = args[slot[1]] if slot[0] == "arg" else kwargs[slot[1]]  # type: ignore[index]
    else:
        value = output if site.index is None else output[site.index]
    if value is None and site.optional:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"site {site.module_path!r} ({site.kind}) holds {type(value).__name__}, not a Tensor; "
                        "set Site.index to pick a tuple element")
    return value


def put_value(site: Site, container: Any, value: torch.Tensor) -> Any:
    """``container`` with the site's tensor replaced (the whole thing when no index applies)."""
    i = (site.index or 0) if site.kind == "input" else site.index
    if i is None:
        return value
    items = list(container)
    items[i] = value
    if hasattr(container, "_fields"):  # namedtuple
        return type(container)(*items)
    return tuple(items) if isinstance(container, tuple) else type(container)(items)


def put_input(site: Site, args: tuple, kwargs: dict[str, Any], value: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` of a call with an input site's tensor replaced (for ``with_kwargs`` pre-hooks)."""
    slot = _input_slot(site, args, kwargs)
    if slot is None:
        raise ValueError(f"site {site.module_path!r}: no input to replace in this call")
    if slot[0] == "kw":
        return args, {**kwargs, slot[1]: value}
    items = list(args)
    items[slot[1]] = value
    return tuple(items), kwargs


def sites_from_prefix(model: nn.Module, pattern: str, kind: Literal["output", "input"] = "output") -> dict[str, Site]:
    """``{path: Site(path)}`` for every module whose dotted path matches ``pattern``, where ``*``
    matches one path segment, e.g. ``"blocks.*"`` -> blocks.0, blocks.1, ... (not blocks.0.fc)."""
    rx = re.compile("\\.".join(re.escape(p).replace("\\*", "[^.]*") for p in pattern.split(".")) + r"\Z")
    return {n: Site(n, kind=kind) for n, _ in model.named_modules() if rx.match(n)}
