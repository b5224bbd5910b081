"""Call metadata (control step, denoise step, ...) that Taps and Interventions see.

Models and policies annotate the region of a forward pass, e.g. the flow-matching
sampler wraps each integration step in ``annotate(denoise_step=k)``; the policy wraps
each chunk prediction in ``annotate(step=t)``. Nested annotations merge.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_ANNOTATIONS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("latent_annotations", default=None)


@contextlib.contextmanager
def annotate(**meta: Any) -> Iterator[None]:
    token = _ANNOTATIONS.set({**(_ANNOTATIONS.get() or {}), **meta})
    try:
        yield
    finally:
        _ANNOTATIONS.reset(token)


def current_annotations() -> dict[str, Any]:
    return dict(_ANNOTATIONS.get() or {})
