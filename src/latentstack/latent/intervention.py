"""Intervention: replace latent states at named sites for the duration of a ``with`` block.

Edits go through hooks only (never parameters), so the model is bit-identical after exit,
and an edit returning its input unchanged is an exact no-op. Hooks run in registration
order: an Intervention entered inside a Tap on the same site acts after the Tap recorded.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .context import current_annotations
from .site import LatentSites, Site, get_value, lookup_site, put_input, put_value, site_name

if TYPE_CHECKING:  # typing.Self is Python >= 3.11: imported for type checkers only
    from typing import Self

Edit = Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class Intervention:
    """``edits[site](value, meta) -> replacement`` at every call; meta = annotations + call_index.

    ``mode="hook"`` (default) installs forward (pre-)hooks, ordered with any Tap on the same site.
    ``mode="wrap"`` instead shadows the module's ``forward`` with a wrapper for the duration of the
    block: the same edit and outputs, without torch's hooked-call slow path (measured ≈ 1 % of a
    VLA chunk call per hooked layer — what a deployed steering gate should not pay). In wrap mode
    the edit runs *before* the module's forward hooks, so a Tap on the same site records the
    edited value. Exit deletes the shadowing attribute: the module is exactly as before.
    """

    MODES = ("hook", "wrap")

    def __init__(self, model: nn.Module, edits: Mapping[str | Site, Edit], sites: LatentSites | None = None,
                 mode: str = "hook") -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.model = model
        self.edits: list[tuple[str, Site, Edit]] = []
        for key, fn in edits.items():
            if not callable(fn):
                raise TypeError(f"edit for {key!r} is not callable")
            self.edits.append((key if isinstance(key, str) else site_name(key), lookup_site(model, key, sites), fn))
        self._calls = [0] * len(self.edits)
        self._handles: list[Any] = []

    def __enter__(self) -> Self:
        if self._handles:
            raise RuntimeError("Intervention is already active")
        try:
            for i, (_, site, _) in enumerate(self.edits):
                module = site.resolve(self.model)
                if self.mode == "wrap":
                    h = self._wrap(module, i, site)
                elif site.needs_kwargs:
                    h = module.register_forward_pre_hook(lambda m, a, kw, _i=i: self._apply(_i, a, a, kw),
                                                         with_kwargs=True)
                elif site.kind == "input":
                    h = module.register_forward_pre_hook(lambda m, a, _i=i: self._apply(_i, a, a))
                else:
                    h = module.register_forward_hook(lambda m, a, o, _i=i: self._apply(_i, a, o))
                self._handles.append(h)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _wrap(self, module: nn.Module, i: int, site: Site) -> Any:
        if "forward" in module.__dict__:
            raise RuntimeError(f"module {site.module_path!r} already has an instance-level forward "
                               "(another wrap-mode Intervention is active on it)")
        orig = module.forward
        apply = self._apply
        if site.needs_kwargs:
            def forward(*args: Any, **kwargs: Any) -> Any:
                new = apply(i, args, args, kwargs)
                return orig(*args, **kwargs) if new is None else orig(*new[0], **new[1])
        elif site.kind == "input":
            def forward(*args: Any, **kwargs: Any) -> Any:
                new = apply(i, args, args)
                return orig(*(args if new is None else new), **kwargs)
        else:
            def forward(*args: Any, **kwargs: Any) -> Any:
                out = orig(*args, **kwargs)
                new = apply(i, args, out)
                return out if new is None else new
        forward.latent_edit = (self, i)  # type: ignore[attr-defined]  # lets a CUDA-graph capture identify the edit
        module.forward = forward  # instance attribute shadows the class method; deleted on exit

        class _Unwrap:
            def remove(self) -> None:
                module.__dict__.pop("forward", None)

        return _Unwrap()

    def _apply(self, i: int, args: tuple, container: Any, kwargs: dict[str, Any] | None = None) -> Any:
        name, site, fn = self.edits[i]
        meta = current_annotations()  # a fresh dict per call
        meta["call_index"] = self._calls[i]
        self._calls[i] += 1
        value = get_value(site, args, container, kwargs)
        if value is None:  # optional site, not passed in this call: nothing to edit
            return None
        new = fn(value, meta)
        if new is value:
            return None  # exact no-op: leave the module's output / input untouched
        if not isinstance(new, torch.Tensor):
            raise TypeError(f"edit for site {name!r} returned {type(new).__name__}, expected a Tensor")
        if new.shape != value.shape or new.dtype != value.dtype or new.device != value.device:
            raise ValueError(
                f"edit for site {name!r} must keep shape/dtype/device: got {tuple(new.shape)} {new.dtype} "
                f"{new.device}, expected {tuple(value.shape)} {value.dtype} {value.device}"
            )
        if site.needs_kwargs:
            return put_input(site, args, kwargs or {}, new)  # a with_kwargs pre-hook returns (args, kwargs)
        return put_value(site, container, new)


def module_snapshot(model: nn.Module) -> dict[str, Any]:
    """Clones of all parameters and buffers, plus hook ids, grad flags and train mode per module,
    for :func:`assert_model_unchanged` (tests of 'no side effects after exit')."""
    return {
        "tensors": {f"p:{k}": v.detach().clone() for k, v in model.named_parameters(remove_duplicate=False)}
        | {f"b:{k}": v.detach().clone() for k, v in model.named_buffers(remove_duplicate=False)},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters(remove_duplicate=False)},
        "hooks": {n: {d: list(getattr(m, d, {})) for d in _HOOK_DICTS} for n, m in model.named_modules()},
        "training": {n: m.training for n, m in model.named_modules()},
    }


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    try:  # bitwise, so NaN payloads and -0.0 count too
        return torch.equal(a.reshape(-1).contiguous().view(torch.uint8), b.reshape(-1).contiguous().view(torch.uint8))
    except (RuntimeError, TypeError):
        return torch.equal(a, b)


def assert_model_unchanged(model: nn.Module, snapshot: dict[str, Any]) -> None:
    """Raise AssertionError naming every tensor, hook dict or flag that differs from ``snapshot``."""
    now = module_snapshot(model)
    diffs = [f"tensor set: {sorted(set(now['tensors']) ^ set(snapshot['tensors']))}"] \
        if now["tensors"].keys() != snapshot["tensors"].keys() else []
    diffs += [f"tensor {k}" for k, v in snapshot["tensors"].items()
              if k in now["tensors"] and not _bits_equal(v, now["tensors"][k])]
    for key in ("requires_grad", "hooks", "training"):
        diffs += [f"{key} of {k!r}" for k in snapshot[key].keys() | now[key].keys()
                  if snapshot[key].get(k) != now[key].get(k)]
    if diffs:
        raise AssertionError(f"model changed: {diffs[:20]}")
