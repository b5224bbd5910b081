"""latentstack: robot policies and perception models that share one latent-state API."""

__version__ = "0.1.0"


def _preload_triton() -> None:
    """Load triton's LLVM-based library before anything can load Mesa's LLVM.

    With MuJoCo rendering through EGL on Mesa (llvmpipe, as on CPU machines), Mesa loads its own libLLVM; a later
    ``import triton`` (torch does it lazily, e.g. on the first optimizer step or ``torch.compile``) then dies
    with a segmentation fault. Loaded first, both coexist (checked: render -> import crashes, import -> render
    works). Costs ~0.1 s where triton is installed; ``LATENTSTACK_PRELOAD_TRITON=0`` turns it off.
    """
    import importlib.util
    import os

    if os.environ.get("LATENTSTACK_PRELOAD_TRITON", "1") == "0":
        return
    try:
        spec = importlib.util.find_spec("triton")
        if spec is None or not spec.submodule_search_locations:
            return
        import ctypes

        # the shared library only, not the triton package: importing triton here would fix its mode before a
        # test or user sets TRITON_INTERPRET (its language library is decorated at import)
        lib = os.path.join(next(iter(spec.submodule_search_locations)), "_C", "libtriton.so")
        if os.path.isfile(lib):
            ctypes.CDLL(lib)
    except Exception as exc:  # noqa: BLE001 - a broken triton install must not break latentstack
        import logging

        logging.getLogger("latentstack").debug("triton preload skipped: %s", exc)


_preload_triton()
