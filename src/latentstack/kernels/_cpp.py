"""Build-once, cached, fail-soft loading of the small C++ CPU kernels.

Why: a C++ loop is the fastest CPU form for the sequential scan and the cheapest way to fuse
the per-token quantisation around ``_int_mm``, but a machine may lack a compiler. Each source
registers plain torch ops (``TORCH_LIBRARY``), so no pybind11 headers are compiled (~15 s cold
build with gcc 12 + ninja). Builds go through ``torch.utils.cpp_extension.load`` into torch's
extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), named by a
hash of the source, the flags, the torch version and this CPU's ISA flags (the code is built
with ``-march=native`` and must never be loaded on a different CPU). Concurrent builds are
serialised by torch's file lock. A failure is remembered for the process, warned about once,
and callers fall back to torch paths.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import warnings
from collections.abc import Callable

import torch

__all__ = ["CFLAGS", "CppOps", "cpu_fingerprint"]

CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]


def cpu_fingerprint() -> str:
    """ISA flags of this CPU (part of the cache key because of ``-march=native``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class CppOps:
    """One C++ source that registers the torch op namespace ``namespace`` when loaded."""

    def __init__(self, namespace: str, source: str, filename: str, env_switch: str, what: str, probe: str,
                 on_load: Callable[[], None] | None = None) -> None:
        self.namespace, self.source, self.filename, self.probe = namespace, source, filename, probe
        self.on_load = on_load
        self.env_switch, self.what = env_switch, what
        self._lock = threading.Lock()
        self._loaded = False
        self._error: str | None = None

    def name(self) -> str:
        """Extension name: namespace + hash of everything that changes the binary."""
        key = "\n".join([self.source, " ".join(CFLAGS), cpu_fingerprint(), torch.__version__])
        return f"{self.namespace}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def status(self) -> tuple[bool, str | None]:
        """(loaded, error of a failed build or ``None``) — never triggers a build."""
        return self._loaded, self._error

    def load(self, verbose: bool = False) -> bool:
        """Build (first time on a machine) or load the ops; ``False`` if unavailable."""
        if self._loaded:
            return True
        if self._error is not None:
            return False
        with self._lock:
            if self._loaded or self._error is not None:
                return self._loaded
            if os.environ.get(self.env_switch, "1") == "0":
                self._error = f"disabled by {self.env_switch}=0"
                return False
            try:
                from torch.utils import cpp_extension

                name = self.name()
                build_dir = cpp_extension._get_build_directory(name, verbose)
                src = os.path.join(build_dir, self.filename)
                current = None
                if os.path.exists(src):
                    with open(src, encoding="utf-8") as f:
                        current = f.read()
                if current != self.source:
                    tmp = f"{src}.{os.getpid()}.tmp"
                    with open(tmp, "w", encoding="utf-8") as f:
                        f.write(self.source)
                    os.replace(tmp, src)
                cpp_extension.load(
                    name=name,
                    sources=[src],
                    extra_cflags=CFLAGS,
                    build_directory=build_dir,
                    is_python_module=False,
                    verbose=verbose,
                )
                getattr(getattr(torch.ops, self.namespace), self.probe)  # the ops must resolve now
                if self.on_load is not None:
                    self.on_load()
                self._loaded = True
            except Exception as exc:  # noqa: BLE001 - any build/load failure means "fall back"
                self._error = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"latentstack: {self.what} unavailable, falling back ({self._error[:300]})",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self._loaded
