"""``lstack serve``: a websocket policy server speaking openpi's protocol, batching concurrent clients.

Protocol (openpi ``websocket_policy_server``): on connect the server sends one msgpack metadata dict; each
request is one msgpack-numpy observation dict (``image`` uint8 (H, W, 3) or (3, H, W), ``state`` (state_dim,),
``instruction``/``task`` str, optional ``noise`` (horizon, action_dim)); the reply is
``{"actions": float32 (horizon, action_dim), "server_timing": {"infer_ms", "prev_total_ms", "queue_ms",
"batch_size"}}``. A plain HTTP ``GET /healthz`` answers ``OK``. On any error the server sends the traceback as a
text frame and closes the connection with code 1011. Arrays of object / structured / complex dtype are refused
while decoding; there is no pickle anywhere. Extension: ``{"__control__": "reset", "seed": int | None}``
reseeds the connection's noise generator (reply ``{"reset": True, "seed": ...}``); see :mod:`.client`.
Input caps (openpi has none): messages up to ``max_message_bytes`` (64 MiB), images up to 4096 px a side, one
decoded array up to 1 GiB. The server binds 127.0.0.1 by default and has no authentication.

Non-blocking: the event loop only decodes, validates and queues; the model runs in one worker thread (one
thread: the model is never used concurrently).

Batching: requests that arrive within ``batch_wait_ms`` of the first queued one (and, automatically, all those
that queued while the previous forward pass ran) are stacked into one ``predict_action_chunk`` call of up to
``batch_max`` observations (grouped by image and state shape). Sampling noise stays per client: every request's
noise is drawn from its own connection's generator (one ``(1, horizon, action_dim)`` draw, exactly the draw the
local policy makes per chunk) or taken from the request, and the drawn rows are stacked; so a client's noise
does not depend on who it was batched with, and batching changes actions only by the float rounding of a
larger matrix product (the tests bound it). If a batched call fails, its requests are retried one by one, so
one bad request fails only its own connection. On CUDA (captured chunk graphs, one per input shape) batches are
padded to the next power of two with filler rows of zero noise that consume no client's generator.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import http
import inspect
import logging
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import CloseCode

from latentstack.serving import msgpack_numpy

__all__ = ["ChunkBackend", "PolicyServer", "ServerThread", "validate_observation"]

log = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 4096
MAX_TEXT = 4096


# --------------------------------------------------------------------------- the model side
class ChunkBackend:
    """Adapts a policy with a batched ``predict_action_chunk(batch, noise=...) -> (B, H, A)`` (the VLA, the
    quantized VLA) to the server: batch building, per-connection noise generators, metadata."""

    def __init__(self, policy: Any, *, default_seed: int | None = None, pad_batches: bool | None = None) -> None:
        import torch

        self.torch = torch
        self.policy = policy
        # CUDA graphs are captured per input shape (a small LRU cache, policies/vla/cuda_graph_vla.py): batches are
        # padded to the next power of two there, so 1..16 clients replay 5 graphs instead of re-capturing 16
        device = getattr(policy, "device", None)
        self.pad_batches = bool(getattr(device, "type", "cpu") == "cuda") if pad_batches is None else pad_batches
        cfg = getattr(policy, "config", None)
        self.horizon = int(getattr(cfg, "chunk_size", 0) or 0)
        self.action_dim = int(getattr(cfg, "action_dim", 0) or 0)
        self.n_action_steps = int(getattr(cfg, "n_action_steps", 0) or self.horizon)
        self.default_seed = int(default_seed if default_seed is not None else getattr(cfg, "seed", 0) or 0)
        fn = getattr(policy, "predict_action_chunk", None)
        if fn is None or "noise" not in inspect.signature(fn).parameters or not self.horizon:
            raise TypeError(f"{type(policy).__name__} has no batched predict_action_chunk(batch, noise=...): "
                            "the server needs a chunk policy (a VLA artifact)")

    def metadata(self) -> dict[str, Any]:
        cfg = self.policy.config
        return {
            "server": "latentstack",
            "protocol": "openpi-websocket",
            "policy_type": type(self.policy).__name__,
            "action_horizon": self.horizon,
            "action_dim": self.action_dim,
            "n_action_steps": self.n_action_steps,
            "state_dim": int(getattr(cfg, "state_dim", 0) or 0),
            "image_size": int(getattr(cfg, "image_size", 0) or 0),
            "default_seed": self.default_seed,
            "pad_batches": self.pad_batches,
            "noise": "one generator per connection (reset: {'__control__': 'reset', 'seed': s}) or 'noise' key",
        }

    def new_generator(self, seed: int | None = None) -> Any:
        return self.torch.Generator().manual_seed(self.default_seed if seed is None else int(seed))

    def noise_for(self, req: Request) -> Any:
        """The request's noise (1, H, A): its own array, else the next draw of its connection's generator --
        the same ``torch.randn`` call the local VLA makes per chunk (``sample_actions``), so a remote client
        with the same seed sees the same noise stream as the local policy."""
        if req.noise is not None:
            return self.torch.as_tensor(req.noise, dtype=self.torch.float32)[None]
        return self.torch.randn(1, self.horizon, self.action_dim, generator=req.session.generator)

    def infer(self, reqs: Sequence[Request]) -> list[np.ndarray]:
        """One forward pass over ``reqs`` (same image/state shapes) -> one (H, A) float32 chunk each."""
        torch = self.torch
        noise = torch.cat([self.noise_for(r) for r in reqs])  # drawn in request order, each from its own stream
        rows = list(reqs)
        if self.pad_batches and len(rows) & (len(rows) - 1):
            # filler rows repeat the last observation with zero noise: no client's generator is consumed, and rows
            # are independent in the model (per-sample attention), so real rows do not see them
            pad = (1 << len(rows).bit_length()) - len(rows)
            rows += [rows[-1]] * pad
            noise = torch.cat([noise, noise.new_zeros(pad, *noise.shape[1:])])
        batch = {
            "image": np.stack([r.image for r in rows]),
            "state": np.stack([r.state for r in rows]),
            "instruction": [r.text for r in rows],
        }
        with torch.inference_mode():
            out = self.policy.predict_action_chunk(batch, noise=noise)
        out = out.detach().cpu().numpy().astype(np.float32)
        return [out[i] for i in range(len(reqs))]


# --------------------------------------------------------------------------- requests
@dataclass
class Session:
    generator: Any
    requests: int = 0


@dataclass
class Request:
    image: np.ndarray
    state: np.ndarray
    text: str
    noise: np.ndarray | None
    session: Session
    future: asyncio.Future | None = None
    t_queued: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group_key(self) -> tuple:
        return (self.image.shape, self.image.dtype.str, self.state.shape)


def validate_observation(obs: Any, horizon: int, action_dim: int) -> tuple[np.ndarray, np.ndarray, str,
                                                                          np.ndarray | None]:
    """Checks one decoded request before it can reach the model -> (image, state, text, noise)."""
    if not isinstance(obs, dict):
        raise TypeError(f"a request must be a dict, got {type(obs).__name__}")
    image, state = obs.get("image", obs.get("observation.image")), obs.get("state", obs.get("observation.state"))
    if not isinstance(image, np.ndarray) or image.ndim != 3 or 3 not in (image.shape[0], image.shape[-1]):
        raise ValueError("'image' must be an array (H, W, 3) or (3, H, W)")
    if image.dtype not in (np.uint8, np.float32) or max(image.shape) > MAX_IMAGE_SIDE:
        raise ValueError(f"'image' must be uint8 or float32 and at most {MAX_IMAGE_SIDE} px a side")
    if not isinstance(state, np.ndarray) or state.ndim != 1 or state.dtype.kind not in "fiu" or state.size > 4096:
        raise ValueError("'state' must be a 1-D numeric array")
    if not np.all(np.isfinite(state)):
        raise ValueError("'state' must be finite")
    text = obs.get("instruction") or obs.get("task") or ""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError(f"'instruction' / 'task' must be a str of at most {MAX_TEXT} characters")
    noise = obs.get("noise")
    if noise is not None:
        if not isinstance(noise, np.ndarray) or noise.shape != (horizon, action_dim) or noise.dtype.kind != "f":
            raise ValueError(f"'noise' must be a float array of shape ({horizon}, {action_dim})")
        noise = noise.astype(np.float32)
    return image, state, text, noise


# --------------------------------------------------------------------------- the server
class PolicyServer:
    """Websocket server around a :class:`ChunkBackend` (see the module docstring)."""

    def __init__(self, backend: ChunkBackend, *, host: str = "127.0.0.1", port: int = 8000, batch_max: int = 16,
                 batch_wait_ms: float = 2.0, max_message_bytes: int = 64 << 20,
                 metadata: Mapping[str, Any] | None = None) -> None:
        if batch_max < 1:
            raise ValueError(f"batch_max must be >= 1, got {batch_max}")
        if batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
        self.backend = backend
        self.host, self.port = host, port
        self.batch_max, self.batch_wait_s = int(batch_max), float(batch_wait_ms) / 1000.0
        self.max_message_bytes = max_message_bytes
        self.metadata = {**backend.metadata(), "batch_max": self.batch_max,
                         "batch_wait_ms": float(batch_wait_ms), **dict(metadata or {})}
        # the worker runs with the creating thread's torch thread count (OpenMP's count is per thread): the same
        # kernels, and so the same float results, as a call on this thread
        threads = backend.torch.get_num_threads()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="policy-infer", initializer=backend.torch.set_num_threads,
            initargs=(threads,))
        self._queue: asyncio.Queue[Request] | None = None
        self.batches: list[int] = []  # batch sizes run (stats / tests)

    # ------------------------------------------------------------ inference (worker thread)
    def _run_batch(self, reqs: list[Request]) -> list[tuple[np.ndarray | None, str | None, float]]:
        """Groups by shape, one forward per group; a failing group is retried request by request."""
        out: dict[int, tuple[np.ndarray | None, str | None, float]] = {}
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault(r.group_key, []).append(i)
        for idx in groups.values():
            t0 = time.perf_counter()
            try:
                chunks = self.backend.infer([reqs[i] for i in idx])
                ms = (time.perf_counter() - t0) * 1000
                for i, c in zip(idx, chunks):
                    out[i] = (c, None, ms)
                self.batches.append(len(idx))
            except Exception:  # noqa: BLE001 -- any model failure becomes that client's traceback frame
                if len(idx) == 1:
                    out[idx[0]] = (None, traceback.format_exc(), 0.0)
                    continue
                for i in idx:  # noise of the failed call was drawn already: redraws continue each stream
                    t1 = time.perf_counter()
                    try:
                        c = self.backend.infer([reqs[i]])[0]
                        out[i] = (c, None, (time.perf_counter() - t1) * 1000)
                        self.batches.append(1)
                    except Exception:  # noqa: BLE001 -- as above, per request
                        out[i] = (None, traceback.format_exc(), 0.0)
        return [out[i] for i in range(len(reqs))]

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self.batch_max > 1 and self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)  # let concurrent clients' requests join this pass
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, batch)
            except Exception:  # noqa: BLE001 -- never leave a client waiting
                tb = traceback.format_exc()
                results = [(None, tb, 0.0)] * len(batch)
            now = time.perf_counter()
            for req, (chunk, tb, ms) in zip(batch, results):
                if req.future is not None and not req.future.done():
                    req.future.set_result((chunk, tb, ms, len(batch), now))

    # ------------------------------------------------------------ connections (event loop)
    def _health(self, connection: ServerConnection, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None  # everything else: the websocket handshake

    async def _handler(self, ws: ServerConnection) -> None:
        assert self._queue is not None
        session = Session(self.backend.new_generator())
        loop = asyncio.get_running_loop()
        await ws.send(msgpack_numpy.packb(self.metadata))
        prev_total_ms: float | None = None
        while True:
            try:
                msg = await ws.recv()
            except websockets.exceptions.ConnectionClosed:
                break
            t0 = time.perf_counter()
            try:
                if isinstance(msg, str):
                    raise TypeError("requests are msgpack binary frames, not text")
                obs = msgpack_numpy.unpackb(msg)
                if isinstance(obs, dict) and "__control__" in obs:
                    await ws.send(msgpack_numpy.packb(self._control(obs, session)))
                    continue
                image, state, text, noise = validate_observation(obs, self.backend.horizon, self.backend.action_dim)
                req = Request(image, state, text, noise, session, loop.create_future(), t0)
                self._queue.put_nowait(req)
                chunk, tb, infer_ms, batch_size, t_done = await req.future
                if tb is not None:
                    raise RemoteTraceback(tb)
                session.requests += 1
                timing = {"infer_ms": infer_ms, "queue_ms": (t_done - t0) * 1000 - infer_ms,
                          "batch_size": batch_size}
                if prev_total_ms is not None:
                    timing["prev_total_ms"] = prev_total_ms
                await ws.send(msgpack_numpy.packb({"actions": chunk, "server_timing": timing}))
                prev_total_ms = (time.perf_counter() - t0) * 1000
            except websockets.exceptions.ConnectionClosed:
                break
            except Exception as exc:  # noqa: BLE001 -- protocol: traceback text frame + close 1011
                text_frame = exc.text if isinstance(exc, RemoteTraceback) else traceback.format_exc()
                log.warning("policy server: request failed, closing the connection (1011):\n%s", text_frame)
                try:
                    await ws.send(text_frame)
                    await ws.close(code=CloseCode.INTERNAL_ERROR, reason="internal server error, traceback sent")
                except websockets.exceptions.ConnectionClosed:
                    pass
                break

    def _control(self, msg: dict, session: Session) -> dict[str, Any]:
        if msg.get("__control__") != "reset":
            raise ValueError(f"unknown control message {msg.get('__control__')!r} (known: 'reset')")
        seed = msg.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
            raise ValueError(f"seed must be an int in [0, 2**63) or None, got {seed!r}")
        if seed is not None:
            session.generator.manual_seed(seed)
        return {"reset": True, "seed": seed}

    async def serve(self, ready: asyncio.Future | None = None, stop: asyncio.Event | None = None) -> None:
        """Serves until ``stop`` is set (forever without one); ``ready`` gets the bound port."""
        self._queue = asyncio.Queue()
        batcher = asyncio.create_task(self._batch_loop())
        try:
            async with serve(self._handler, self.host, self.port, compression=None, max_size=self.max_message_bytes,
                             process_request=self._health) as server:
                self.port = server.sockets[0].getsockname()[1] if server.sockets else self.port
                if ready is not None:
                    ready.set_result(self.port)
                if stop is None:
                    await server.serve_forever()
                else:
                    await stop.wait()
        finally:
            batcher.cancel()

    def serve_forever(self) -> None:
        asyncio.run(self.serve())

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class RemoteTraceback(Exception):
    """A worker-thread failure carried to its connection as the traceback text."""

    def __init__(self, text: str) -> None:
        super().__init__(text.strip().splitlines()[-1] if text.strip() else "error")
        self.text = text


class ServerThread:
    """Runs a :class:`PolicyServer` on its own event loop in a background thread (tests, benchmarks, demos).

    ``with ServerThread(server) as port: ...`` -- the port is bound (``port=0`` picks a free one)."""

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="policy-server", daemon=True)
        self._ready: concurrent.futures.Future[int] = concurrent.futures.Future()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            ready = self._loop.create_future()
            ready.add_done_callback(lambda f: self._ready.set_result(f.result()) if not f.exception() else None)
            try:
                await self.server.serve(ready, self._stop)
            except BaseException as exc:
                if not self._ready.done():
                    self._ready.set_exception(exc)
                raise

        self._loop.run_until_complete(main())

    def start(self, timeout: float = 30.0) -> int:
        self._thread.start()
        return self._ready.result(timeout=timeout)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
        self.server.close()

    def __enter__(self) -> int:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cmd_serve(args: Any) -> int:
    """``lstack serve``: load the artifact, print the address, serve until interrupted."""
    import torch

    from latentstack.policies.factory import make_policy

    torch.set_num_threads(args.threads)
    policy = make_policy(args.artifact, device=args.device)
    if hasattr(policy, "eval"):
        policy.eval()
    server = PolicyServer(ChunkBackend(policy, default_seed=args.seed), host=args.host, port=args.port,
                          batch_max=args.batch_max, batch_wait_ms=args.batch_wait_ms)
    loop_ready: dict[str, int] = {}

    async def main() -> None:
        ready = asyncio.get_running_loop().create_future()
        ready.add_done_callback(lambda f: (loop_ready.setdefault("port", f.result()),
                                           print(f"lstack serve: {args.artifact} on ws://{args.host}:{f.result()} "
                                                 f"(device {args.device}, batch_max {args.batch_max}, "
                                                 f"batch_wait_ms {args.batch_wait_ms}); GET /healthz", flush=True)))
        await server.serve(ready)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
