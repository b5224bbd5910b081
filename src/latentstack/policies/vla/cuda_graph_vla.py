"""The VLA's whole chunk prediction (vision, backbone, K expert steps, de-normalisation) as one CUDA graph.

Why: the ~2 M-parameter VLA chunk is hundreds of small kernels; on a GPU their launch overhead, not their
FLOPs, sets the latency (spec gpu.md §2). :class:`ChunkGraph` captures ``VLAPolicy._chunk`` once per input
signature with static input buffers (images, state, token ids, key mask, **noise**) and a static output, and
each call copies the processed inputs in, replays, and returns a copy of the output.

Reproducibility: the noise is an input buffer, drawn by the caller from the same generator and in the same order
as the eager path (the policy's CPU generator by default), so graph and eager see the same noise and consume
the generator identically.

When the graph is not used (the policy falls back to eager, exactly today's code): not on CUDA; training mode;
a forward hook / pre-hook anywhere in the model or a global one (Taps and hook-mode Interventions must run
Python on every call); or an instance-level ``forward`` that is not a wrap-mode Intervention whose edit is
marked graph-safe (:func:`latentstack.kernels.conceptor.is_graph_safe`: a pure function of the value and the
``denoise_step`` annotation, e.g. the COAST conceptor gate). A graph-safe steering gate is captured *inside*
the graph (its one GEMM per denoising step replays with the rest), keyed on the Intervention's identity, so
swapping or removing the gate re-captures or drops back.

Invalidation: the cache is keyed on shapes, the presence of a language mask, K, and the identities of every
parameter/buffer storage (``data_ptr``), so ``.to()``, a dtype change or replacing a layer (quantisation)
captures anew; in-place weight edits (calibration folds) are seen by the replay as they are by eager calls.
Walking ~170 tensors costs ~0.4 ms of Python on a slow CPU, so the storage key is recomputed only when
something may have moved them: the policy's ``_apply`` (``.to()``) bumps its ``_graph_version``, and, once a
graph exists, torch's global module/parameter/buffer registration hooks bump a process-wide counter (any
``setattr`` of a layer or parameter anywhere). Only ``param.data = ...`` on a submodule escapes both: call
``clear_cuda_graphs()`` after that.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from latentstack.kernels.conceptor import is_graph_safe
from latentstack.policies.vla.processor_vla import VLAInputs

__all__ = ["ChunkGraph", "ChunkGraphCache", "graph_blocker"]

ChunkFn = Callable[[VLAInputs, Tensor, int], Tensor]


def _module_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def graph_blocker(model: nn.Module) -> tuple[str | None, tuple[Any, ...], list[Any]]:
    """``(reason the chunk cannot be captured or None, key of the captured wrappers, objects to keep alive)``."""
    from torch.nn.modules import module as _mod

    if getattr(_mod, "_global_forward_hooks", None) or getattr(_mod, "_global_forward_pre_hooks", None):
        return "global forward hooks are registered", (), []
    key: list[Any] = []
    keep: list[Any] = []
    for name, m in model.named_modules():
        if _module_hooks(m):
            return f"module {name!r} has forward hooks (a Tap or hook-mode Intervention)", (), []
        fwd = m.__dict__.get("forward")
        if fwd is None:
            continue
        tag = getattr(fwd, "latent_edit", None)
        if tag is None:
            return f"module {name!r} has an instance-level forward of unknown origin", (), []
        iv, i = tag
        if not is_graph_safe(iv.edits[i][2]):
            return f"the edit at {name!r} is not marked graph-safe", (), []
        key.append((name, id(iv), i))
        keep.append(iv)  # alive while its graph is cached: its id cannot be reused by another intervention
    return None, tuple(key), keep


def _storage_key(model: nn.Module) -> tuple[int, ...]:
    return tuple(t.data_ptr() for t in model.parameters()) + tuple(b.data_ptr() for b in model.buffers())


_REGISTRATIONS = [0]  # bumped by any module / parameter / buffer registration once a graph was captured
_HOOKS_INSTALLED = [False]


def _bump(*_args: Any) -> None:
    _REGISTRATIONS[0] += 1


def _install_registration_hooks() -> None:
    """Global registration hooks (added lazily: a process that never captures a graph gets no global state)."""
    if _HOOKS_INSTALLED[0]:
        return
    from torch.nn.modules import module as _mod

    for name in ("register_module_module_registration_hook", "register_module_parameter_registration_hook",
                 "register_module_buffer_registration_hook"):
        fn = getattr(_mod, name, None)
        if fn is not None:
            fn(_bump)
    _HOOKS_INSTALLED[0] = True


class ChunkGraph:
    """One captured chunk prediction for fixed input shapes (static buffers in, static output out)."""

    def __init__(self, chunk: ChunkFn, inputs: VLAInputs, noise: Tensor, num_steps: int, warmup: int = 2) -> None:
        def buf(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().clone()

        self.inputs = VLAInputs(buf(inputs.images), buf(inputs.state), buf(inputs.lang_ids),  # type: ignore[arg-type]
                                buf(inputs.lang_mask))
        self.noise = noise.detach().clone()
        self.num_steps = num_steps
        # warm-up on a side stream (lazy cuBLAS/cuDNN init, the steering gate's device copy of M) before capture
        side = torch.cuda.Stream(device=self.noise.device)
        side.wait_stream(torch.cuda.current_stream(self.noise.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                chunk(self.inputs, self.noise, num_steps)
        torch.cuda.current_stream(self.noise.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = chunk(self.inputs, self.noise, num_steps)

    def __call__(self, inputs: VLAInputs, noise: Tensor) -> Tensor:
        st = self.inputs
        st.images.copy_(inputs.images)
        st.state.copy_(inputs.state)
        st.lang_ids.copy_(inputs.lang_ids)
        if st.lang_mask is not None:
            st.lang_mask.copy_(inputs.lang_mask)  # type: ignore[arg-type]
        self.noise.copy_(noise)
        self.graph.replay()
        return self.output.clone()  # the static output is overwritten by the next replay


class ChunkGraphCache:
    """A few captured graphs keyed by input signature (LRU, ``max_graphs``). Eight: paired steering evaluations
    run up to ~6 conditions (each its own Intervention, so its own graph) on one policy object; each graph holds
    only the chunk's activations (order of 10 MB at batch 64 for the shipped VLA, estimated, not measured)."""

    def __init__(self, max_graphs: int = 8) -> None:
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple[Any, ...], tuple[ChunkGraph, list[Any]]] = OrderedDict()
        self.captures = 0  # how many graphs were captured (tests and benchmarks read it)
        self._seen: tuple[int, int] | None = None
        self._storage: tuple[int, ...] = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> ChunkGraphCache:
        return ChunkGraphCache(self.max_graphs)  # graphs belong to one model's storages: a copy starts empty

    def clear(self) -> None:
        self._graphs.clear()
        self._seen = None

    def _storage_sig(self, model: nn.Module) -> tuple[int, ...]:
        seen = (_REGISTRATIONS[0], int(getattr(model, "_graph_version", 0)))
        if seen != self._seen or not _HOOKS_INSTALLED[0]:
            self._storage, self._seen = _storage_key(model), seen
        return self._storage

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, model: nn.Module, chunk: ChunkFn, inputs: VLAInputs, noise: Tensor, num_steps: int
            ) -> Tensor | None:
        """The chunk through a (cached or new) graph; ``None`` when the model cannot be captured now."""
        reason, wrap_key, keep = graph_blocker(model)
        if reason is not None:
            return None
        key = (
            tuple(inputs.images.shape), inputs.images.dtype, tuple(inputs.state.shape), tuple(inputs.lang_ids.shape),
            inputs.lang_mask is not None, tuple(noise.shape), noise.dtype, int(num_steps), str(noise.device),
            wrap_key, self._storage_sig(model),
        )
        hit = self._graphs.get(key)
        if hit is None:
            _install_registration_hooks()
            hit = (ChunkGraph(chunk, inputs, noise, num_steps), keep)
            self.captures += 1
            self._graphs[key] = hit
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return hit[0](inputs, noise)
