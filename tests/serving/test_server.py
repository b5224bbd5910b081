"""lstack serve over loopback: openpi protocol fields, /healthz, error path, dtype refusal, batching, seeds."""
from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from latentstack.serving import msgpack_numpy
from latentstack.serving.client import RemotePolicy, RemotePolicyError, WebsocketClientPolicy

OBS = {"image": np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3), "state": np.float32([0.1, -0.2, 0.3, 0.0]),
       "instruction": "press the coffee button"}


def obs_for(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "state": rng.uniform(-1, 1, 4).astype(np.float32), "instruction": "press the coffee button"}


def test_msgpack_numpy_roundtrip_and_refusals():
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int64(7), "t": "x", "u": np.array(["ab"])}
    out = msgpack_numpy.unpackb(msgpack_numpy.packb(data))
    assert out["a"].dtype == np.float32 and np.array_equal(out["a"], data["a"]) and out["a"].flags.writeable
    assert out["s"] == 7 and isinstance(out["s"], np.int64) and out["t"] == "x" and out["u"][0] == "ab"
    # openpi's wire layout: bytes keys __ndarray__ / data / dtype / shape
    raw = msgpack.unpackb(msgpack_numpy.packb(data), raw=False, strict_map_key=False)
    assert raw["a"] == {b"__ndarray__": True, b"data": data["a"].tobytes(), b"dtype": "<f4", b"shape": [2, 3]}
    for bad in (np.array([{"x": 1}], dtype=object), np.zeros(2, dtype=np.complex64), np.zeros(2, dtype="V4")):
        with pytest.raises(msgpack_numpy.UnsupportedDtype):
            msgpack_numpy.packb({"x": bad})
    # decoding refuses object dtypes / inconsistent sizes that a hostile peer hand-crafts
    for dtype, data_bytes, shape in (("|O", b"\0" * 8, [1]), ("<f4", b"\0" * 3, [1]), ("<f4", b"", [-1])):
        crafted = msgpack.packb({"x": {b"__ndarray__": True, b"data": data_bytes, b"dtype": dtype, b"shape": shape}})
        with pytest.raises(msgpack_numpy.UnsupportedDtype):
            msgpack_numpy.unpackb(crafted)


def test_metadata_reply_fields_and_healthz(serve, vla):
    srv = serve()
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=10)
    assert body.status == 200 and body.read().strip() == b"OK"
    client = WebsocketClientPolicy(f"ws://127.0.0.1:{srv.port}")
    meta = client.get_server_metadata()
    cfg = vla.config
    assert (meta["action_horizon"], meta["action_dim"], meta["n_action_steps"]) == (
        cfg.chunk_size, cfg.action_dim, cfg.n_action_steps)
    r1 = client.infer(OBS)
    assert r1["actions"].shape == (cfg.chunk_size, cfg.action_dim) and r1["actions"].dtype == np.float32
    assert r1["server_timing"]["infer_ms"] > 0 and "prev_total_ms" not in r1["server_timing"]
    r2 = client.infer(OBS)
    # prev_total_ms: the previous request's whole server time, so at least its inference time
    assert r2["server_timing"]["prev_total_ms"] >= r1["server_timing"]["infer_ms"]
    client.close()


def test_remote_noise_stream_equals_local_policy(serve, vla):
    """reset(seed) on the server's connection == reset(seed) on the local policy: same chunks, bit for bit
    (same process, same ops, batch of one)."""
    srv = serve()
    remote = RemotePolicy(f"ws://127.0.0.1:{srv.port}")
    for seed in (0, 5):
        remote.reset(seed)
        got = [remote.select_action(obs_for(i)) for i in range(3 * remote.n_action_steps)]
        vla.reset(seed)
        want = [vla.select_action(obs_for(i)) for i in range(3 * remote.n_action_steps)]
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert remote.requests == 6  # one request per chunk (n_action_steps actions each), not per step
    remote.close()


@pytest.mark.parametrize("bad", ["missing_image", "object_dtype", "text_frame", "bad_noise"])
def test_error_path_traceback_frame_and_close_1011(serve, bad):
    srv = serve()
    with connect(f"ws://127.0.0.1:{srv.port}", compression=None) as ws:
        msgpack_numpy.unpackb(ws.recv())  # metadata
        if bad == "missing_image":
            ws.send(msgpack_numpy.packb({"state": OBS["state"], "instruction": "x"}))
            expect = "'image' must be"
        elif bad == "object_dtype":  # hand-crafted: our packer refuses to build it
            img = {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}
            ws.send(msgpack.packb({"image": img, "state": msgpack_numpy.pack_array(OBS["state"])}))
            expect = "unsupported dtype"
        elif bad == "text_frame":
            ws.send("hello")
            expect = "msgpack binary frames"
        else:
            ws.send(msgpack_numpy.packb({**OBS, "noise": np.zeros((2, 2), np.float32)}))
            expect = "'noise' must be"
        frame = ws.recv(timeout=30)
        assert isinstance(frame, str) and frame.startswith("Traceback") and expect in frame
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    # the server is still up for the next client
    client = WebsocketClientPolicy(f"ws://127.0.0.1:{srv.port}")
    assert client.infer(OBS)["actions"].shape[0] == client.get_server_metadata()["action_horizon"]
    client.close()


def test_client_raises_server_traceback(serve):
    srv = serve()
    client = WebsocketClientPolicy(f"ws://127.0.0.1:{srv.port}")
    with pytest.raises(RemotePolicyError, match="'state' must be"):
        client.infer({"image": OBS["image"], "state": np.zeros((2, 2), np.float32)})


def _run_clients(port: int, n: int, rounds: int) -> dict[int, list[np.ndarray]]:
    """n concurrent clients, each reset(seed=100+i) then ``rounds`` requests; released together each round."""
    out: dict[int, list[np.ndarray]] = {}
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            c = WebsocketClientPolicy(f"ws://127.0.0.1:{port}")
            c.reset(100 + i)
            res = []
            for r in range(rounds):
                barrier.wait(timeout=30)
                res.append(c.infer(obs_for(10 * i + r))["actions"])
            out[i] = res
            c.close()
        except BaseException as exc:  # noqa: BLE001 -- surfaced by the assert below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return out


def test_batching_on_vs_off_same_actions(serve):
    """8 clients with their own seeds: batched (one forward for several clients) == one client per forward, up
    to float rounding of the larger matrix products; per-client noise does not depend on the batch."""
    on = serve(batch_max=16, batch_wait_ms=50.0)
    got_on = _run_clients(on.port, 8, 3)
    assert max(on.policy_server.batches) > 1  # requests were really stacked
    off = serve(batch_max=1)
    got_off = _run_clients(off.port, 8, 3)
    assert set(off.policy_server.batches) == {1}
    for i in range(8):
        for a, b in zip(got_on[i], got_off[i]):
            # actions are O(1) (clipped to [-1, 1]); 1e-5 covers batch-size-dependent fp32 summation order
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # different seeds -> different noise -> different chunks (the comparison above is not vacuous)
    assert not np.allclose(got_on[0][0], got_on[1][0])


def test_client_module_does_not_import_torch(serve):
    srv = serve()
    code = (
        "import sys, numpy as np\n"
        "from latentstack.serving.client import RemotePolicy\n"
        f"p = RemotePolicy('ws://127.0.0.1:{srv.port}')\n"
        "p.reset(1)\n"
        "a = p.select_action({'image': np.zeros((32, 32, 3), np.uint8), 'state': np.zeros(4, np.float32),"
        " 'instruction': 'press the coffee button'})\n"
        "assert a.shape == (4,), a.shape\n"
        "heavy = [m for m in ('torch', 'latentstack.policies', 'latentstack.serving.server') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_padded_batches_give_the_same_rows(vla):
    """CUDA-graph padding (to a power of two) adds filler rows only: real rows as without padding, no client
    generator consumed by the fillers."""
    from latentstack.serving.server import ChunkBackend, Request, Session

    seen = []
    orig = vla.predict_action_chunk

    def spy(batch, **kw):
        seen.append(len(batch["instruction"]))
        return orig(batch, **kw)

    def requests(backend):
        out = []
        for i in range(3):
            o = obs_for(i)
            out.append(Request(o["image"], o["state"], o["instruction"], None, Session(backend.new_generator(40 + i))))
        return out

    plain, padded = ChunkBackend(vla, pad_batches=False), ChunkBackend(vla, pad_batches=True)
    vla.predict_action_chunk = spy
    try:
        a = plain.infer(requests(plain))
        reqs = requests(padded)
        b = padded.infer(reqs)
    finally:
        del vla.predict_action_chunk
    assert seen == [3, 4] and len(b) == 3
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)
    # each generator advanced by exactly one draw
    fresh = ChunkBackend(vla).new_generator(40)
    torch = pytest.importorskip("torch")
    torch.randn(1, padded.horizon, padded.action_dim, generator=fresh)
    assert torch.equal(torch.randn(3, generator=fresh), torch.randn(3, generator=reqs[0].session.generator))
