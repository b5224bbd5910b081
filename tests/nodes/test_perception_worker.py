"""Issue 14: perception nodes run their model off the executor, so a slow frame cannot block the other nodes.

A "slow model" here waits on a gate (an Event, with a timeout so a regression fails instead of hanging):
while it is closed the frame is provably still in flight, so the checks do not depend on timing. Before
the worker existed the model ran inside the subscription callback: ``spin_once`` blocked for the whole
model call and nothing else on the executor was served.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import torch

from latentstack import msgs
from latentstack.nodes import Executor, NodeCore
from latentstack.nodes.lidar_detection import DETECTIONS_TYPE, LidarDetectionNodeCore, LidarDetectionParams
from latentstack.nodes.stereo_depth import DISPARITY_TYPE, StereoDepthNodeCore, StereoDepthParams
from latentstack.nodes.worker import LatestFrameWorker
from latentstack.perception.lion import LionDetector, get_preset
from latentstack.perception.stereo.configuration_stereo import StereoConfig
from latentstack.perception.stereo.model import SA2Tiny
from latentstack.sim.lidar_scenes import generate_scan
from latentstack.transport import DEFAULT, SENSOR_DATA, InProcTransport

GATE_TIMEOUT_S = 20.0  # a gated model gives up after this: a blocking (synchronous) node fails, never hangs
STRING = "std_msgs/msg/String"


class Gate:
    """Blocks model calls until opened; records how many run at once and what they saw."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.threads: set[str] = set()

    def __call__(self) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.add(threading.current_thread().name)
        self.started.set()
        try:
            self.open.wait(GATE_TIMEOUT_S)
        finally:
            with self.lock:
                self.active -= 1


class GatedDetector:
    """Returns one box per cloud with the cloud's first x as its score-carrying marker (which cloud it was)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.seen: list[float] = []

    def detect(self, clouds):
        self.gate()
        out = []
        for c in clouds:
            self.seen.append(float(c[0, 0]))
            out.append({"boxes": np.array([[c[0, 0], 0, 0, 1, 1, 1, 0]], np.float32),
                        "scores": np.ones(1, np.float32), "labels": np.zeros(1, np.int64)})
        return out


class Echo(NodeCore):
    """Another node on the same transport/executor: answers every ping."""

    default_name = "echo"

    def __init__(self, transport) -> None:
        super().__init__(transport)
        self.pub = self.create_publisher("/pong", STRING, "default")
        self.create_subscription("/ping", STRING, lambda m: self.pub.publish(msgs.new(STRING, data=m.data)), "default")


def _cloud(marker: float, stamp: int, n: int = 64):
    arr = np.zeros(n, dtype=[(f, np.float32) for f in ("x", "y", "z")])
    arr["x"] = marker
    return msgs.pointcloud2_from_numpy(arr, stamp=stamp, frame_id="lidar")


def _lidar_graph(model, **params):
    t = InProcTransport()
    node = LidarDetectionNodeCore(t, LidarDetectionParams(score_threshold=0.0, **params), model=model)
    echo = Echo(t)
    ex = Executor([node, echo])
    clouds = t.create_publisher("/points", "sensor_msgs/msg/PointCloud2", SENSOR_DATA)
    ping = t.create_publisher("/ping", STRING, DEFAULT)
    dets: list = []
    pongs: list = []
    t.create_subscription("/detections", DETECTIONS_TYPE, dets.append, DEFAULT)
    t.create_subscription("/pong", STRING, pongs.append, DEFAULT)
    return t, node, ex, clouds, ping, dets, pongs


# ----------------------------------------------------------------------------- nodes
def test_a_slow_detection_does_not_block_the_executor_or_other_nodes():
    gate = Gate()
    det = GatedDetector(gate)
    _t, node, ex, clouds, ping, dets, pongs = _lidar_graph(det)
    try:
        assert LidarDetectionParams().async_inference  # threaded is the default of a running node
        clouds.publish(_cloud(1.0, stamp=1))
        t0 = time.monotonic()
        ex.spin_once(0.0)  # delivers the cloud: the callback validates it and hands it to the worker
        spin_s = time.monotonic() - t0
        assert gate.started.wait(10.0)  # the detector is running now ...
        assert spin_s < GATE_TIMEOUT_S / 2  # ... and spin_once came back without waiting for it
        assert node.worker.in_flight == 1 and node.frames == 0 and dets == []
        # the other node on the same executor keeps answering while the frame is in flight
        for i in range(3):
            ping.publish(msgs.new(STRING, data=f"p{i}"))
            assert ex.spin_until(lambda n=i + 1: len(pongs) == n, timeout=10.0)
        assert node.worker.in_flight == 1 and node.frames == 0  # still the same detection
        gate.open.set()
        assert ex.spin_until(lambda: len(dets) == 1, timeout=30.0)
        assert gate.threads == {f"{node.name}-worker"}  # it ran on the node's worker thread
        assert msgs.stamp_ns(dets[0]) == 1 and node.frames == 1
    finally:
        gate.open.set()
        ex.close()


def test_a_burst_while_busy_holds_one_in_flight_and_one_pending_latest_wins():
    gate = Gate()
    det = GatedDetector(gate)
    _t, node, ex, clouds, _ping, dets, _pongs = _lidar_graph(det)
    n = 25
    try:
        clouds.publish(_cloud(1.0, stamp=1))
        ex.spin_once(0.0)
        assert gate.started.wait(10.0)
        held = []
        for k in range(2, n + 2):  # one cloud per spin: every one reaches the node (the queue depth is not the cap)
            clouds.publish(_cloud(float(k), stamp=k))
            ex.spin_once(0.0)
            held.append((node.worker.in_flight, node.worker.pending))
        assert set(held) == {(1, 1)}  # bounded: the frame in flight plus the newest one waiting
        gate.open.set()
        assert ex.spin_until(lambda: len(dets) == 2, timeout=30.0)
        assert node.wait_idle(30.0)
        ex.spin_once(0.0)
        assert det.seen == [1.0, float(n + 1)]  # the first, then the latest; those between were dropped
        assert [msgs.stamp_ns(d) for d in dets] == [1, n + 1] and node.frames == 2
        st = node.stats()
        assert st["counters"]["frames_dropped_busy"] == n - 1
        assert st["worker"]["max_held"] == 2 and gate.max_active == 1
        assert node.subscriptions[0].received == n + 1  # all delivered by the transport, dropped by the worker
    finally:
        gate.open.set()
        ex.close()


def test_a_slow_stereo_pair_does_not_block_the_executor(monkeypatch):
    gate = Gate()
    real_forward = SA2Tiny.forward

    def slow_forward(self, *a, **k):
        gate()
        return real_forward(self, *a, **k)

    monkeypatch.setattr(SA2Tiny, "forward", slow_forward)
    torch.manual_seed(0)
    model = SA2Tiny(StereoConfig(hidden=8, feat_dim=8, fmap_dim=8, enc_channels=(8, 8, 8, 8)))
    t = InProcTransport()
    node = StereoDepthNodeCore(t, StereoDepthParams(iters=1, baseline_m=0.3), model=model)
    echo = Echo(t)
    ex = Executor([node, echo])
    try:
        pubs = {k: t.create_publisher(f"/{k}", typ, SENSOR_DATA) for k, typ in (
            ("left/image_rect", "sensor_msgs/msg/Image"), ("right/image_rect", "sensor_msgs/msg/Image"),
            ("left/camera_info", "sensor_msgs/msg/CameraInfo"))}
        ping = t.create_publisher("/ping", STRING, DEFAULT)
        depth, pongs = [], []
        t.create_subscription("/depth", "sensor_msgs/msg/Image", depth.append, SENSOR_DATA)
        t.create_subscription("/pong", STRING, pongs.append, DEFAULT)
        pubs["left/camera_info"].publish(msgs.camera_info(64, 32, 40.0, 40.0, 32, 16))
        for side in ("left", "right"):
            pubs[f"{side}/image_rect"].publish(msgs.image_to_msg(np.zeros((32, 64, 3), np.uint8), stamp=7))
        t0 = time.monotonic()
        ex.spin_once(0.0)
        spin_s = time.monotonic() - t0
        assert gate.started.wait(10.0) and spin_s < GATE_TIMEOUT_S / 2
        ping.publish(msgs.new(STRING, data="hello"))
        assert ex.spin_until(lambda: len(pongs) == 1, timeout=10.0)
        assert node.worker.in_flight == 1 and depth == []
        gate.open.set()
        assert ex.spin_until(lambda: len(depth) == 1, timeout=60.0)
        assert msgs.stamp_ns(depth[0]) == 7 and gate.threads == {f"{node.name}-worker"}
    finally:
        gate.open.set()
        ex.close()


def _raw_outputs(make_node, frames, topics):
    """Runs ``frames`` (publish callables) through a node; every output's CDR bytes, per topic, in order."""
    t = InProcTransport()
    node = make_node(t)
    got: dict[str, list[bytes]] = {topic: [] for topic, _ in topics}
    for topic, typ in topics:
        t.create_subscription(topic, typ, lambda m, k=topic: got[k].append(m.data), "sensor_data", raw=True)
    try:
        for send in frames:
            send(t)
            t.spin_once()
            assert node.wait_idle(120.0)  # one frame at a time: none is dropped as busy
            t.spin_once()
        return got, node.stats()["counters"]
    finally:
        node.close()


@pytest.mark.parametrize("kind", ["lidar", "stereo"])
def test_threaded_outputs_equal_the_synchronous_mode(kind):
    """Same frames, same model object: the worker thread publishes the bytes the callback used to publish
    (the same ops on the same machine, so compared exactly)."""
    torch.manual_seed(0)
    if kind == "lidar":
        model = LionDetector(get_preset("lion_tiny_identity", score_threshold=0.0, max_detections=7)).eval()
        scans = [generate_scan(s).points[:20_000] for s in (1, 2)]

        def cloud(i):
            def send(t):
                arr = np.zeros(len(scans[i]), dtype=[(f, np.float32) for f in ("x", "y", "z", "intensity")])
                for j, f in enumerate(("x", "y", "z", "intensity")):
                    arr[f] = scans[i][:, j]
                t.create_publisher("/points", "sensor_msgs/msg/PointCloud2", SENSOR_DATA).publish(
                    msgs.pointcloud2_from_numpy(arr, stamp=100 + i, frame_id="lidar"))
            return send

        frames = [cloud(0), cloud(1)]
        topics = [("/detections", DETECTIONS_TYPE)]

        def make(threaded):
            return lambda t: LidarDetectionNodeCore(t, LidarDetectionParams(score_threshold=0.0,
                                                                           async_inference=threaded), model=model)
    else:
        model = SA2Tiny(StereoConfig(hidden=8, feat_dim=8, fmap_dim=8, enc_channels=(8, 8, 8, 8))).eval()
        rng = np.random.default_rng(0)
        imgs = [rng.integers(0, 256, (2, 30, 60, 3), dtype=np.uint8) for _ in range(2)]

        def pair(i):
            def send(t):
                info = t.create_publisher("/left/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR_DATA)
                info.publish(msgs.camera_info(60, 30, 40.0, 40.0, 30, 15))
                for side, img in zip(("left", "right"), imgs[i]):
                    t.create_publisher(f"/{side}/image_rect", "sensor_msgs/msg/Image", SENSOR_DATA).publish(
                        msgs.image_to_msg(img, stamp=10**9 * (i + 1)))
            return send

        frames = [pair(0), pair(1)]
        topics = [("/depth", "sensor_msgs/msg/Image"), ("/disparity", DISPARITY_TYPE)]

        def make(threaded):
            return lambda t: StereoDepthNodeCore(t, StereoDepthParams(iters=2, baseline_m=0.3,
                                                                     async_inference=threaded), model=model)

    sync, sync_counters = _raw_outputs(make(False), frames, topics)
    threaded, threaded_counters = _raw_outputs(make(True), frames, topics)
    for topic, _ in topics:
        assert len(sync[topic]) == len(frames), (topic, len(sync[topic]))
        assert threaded[topic] == sync[topic], topic
    assert "frames_dropped_busy" not in threaded_counters and not sync_counters.get("callback_error")
    assert not threaded_counters.get("worker_error")


def test_a_failing_model_is_counted_and_logged_and_the_worker_keeps_serving(caplog):
    class Flaky:
        def __init__(self) -> None:
            self.fail = True

        def detect(self, clouds):
            if self.fail:
                raise RuntimeError("model blew up")
            return [{"boxes": np.zeros((0, 7), np.float32), "scores": np.zeros(0, np.float32),
                     "labels": np.zeros(0, np.int64)} for _ in clouds]

    model = Flaky()
    _t, node, ex, clouds, _ping, dets, _pongs = _lidar_graph(model)
    try:
        with caplog.at_level(logging.ERROR, logger="latentstack.nodes"):
            for k in range(20):
                clouds.publish(_cloud(1.0, stamp=k + 1))
                ex.spin_once(0.0)
                assert node.wait_idle(120.0)
        errors = [r for r in caplog.records if "worker job failed" in r.getMessage()]
        # rate-limited (a burst of 5 per 10 s window), with the traceback; every other line counted as suppressed
        assert 1 <= len(errors) <= 10 and errors[0].exc_info is not None
        st = node.stats()
        assert st["counters"]["worker_error"] == 20 and st["log_suppressed"]["worker:worker_error"] == 20 - len(errors)
        model.fail = False
        clouds.publish(_cloud(1.0, stamp=99))
        assert ex.spin_until(lambda: len(dets) == 1, timeout=30.0)  # the same thread, still serving
        assert node.frames == 1
    finally:
        ex.close()


def test_close_stops_and_joins_the_worker_thread():
    gate = Gate()
    _t, node, ex, clouds, _ping, _dets, _pongs = _lidar_graph(GatedDetector(gate))
    clouds.publish(_cloud(1.0, stamp=1))
    ex.spin_once(0.0)
    assert gate.started.wait(10.0)
    clouds.publish(_cloud(2.0, stamp=2))
    ex.spin_once(0.0)  # pending behind the one in flight
    thread = node.worker._thread
    assert thread is not None and thread.is_alive()
    threading.Timer(0.2, gate.open.set).start()  # the frame in flight finishes; close waits for it
    node.close()
    assert not thread.is_alive()
    assert node.worker.counters["frames_dropped_closed"] == 1 and node.frames == 1
    ex.close()


# ----------------------------------------------------------------------------- the worker itself
def test_worker_synchronous_mode_runs_inline_and_raises_to_the_caller():
    seen = []

    def job(item):
        if item == "bad":
            raise ValueError("bad item")
        seen.append((item, threading.current_thread() is threading.main_thread()))

    w = LatestFrameWorker(job, name="sync", logger=logging.getLogger("test.worker"), threaded=False)
    w.submit("a")
    assert seen == [("a", True)] and w._thread is None and w.wait_idle(0.0)
    with pytest.raises(ValueError, match="bad item"):
        w.submit("bad")  # the node's callback guard counts it, as before the worker existed
    w.close()


def test_worker_message_errors_and_wait_idle_timeout():
    gate = Gate()

    def job(item):
        if item == "invalid":
            raise msgs.MessageValueError("not a frame")
        gate()

    w = LatestFrameWorker(job, name="w", logger=logging.getLogger("test.worker"))
    try:
        w.submit("invalid")
        assert w.wait_idle(30.0)
        assert w.counters["invalid_message"] == 1 and "worker_error" not in w.counters
        w.submit("slow")
        assert gate.started.wait(10.0)
        assert not w.wait_idle(0.05)  # still in flight: the timeout is honoured
        gate.open.set()
        assert w.wait_idle(30.0) and w.counters["frames_processed"] == 2
    finally:
        gate.open.set()
        w.close()
    w.submit("after close")  # ignored, no thread restarted
    assert w.counters["frames_submitted"] == 2 and not w._thread.is_alive()


def test_the_worker_publishes_over_dds():
    """The DDS transport's write from the worker thread (Cyclone's C writer; no Python state shared with spin)."""
    pytest.importorskip("cyclonedds")
    import random

    from latentstack.transport.dds import DdsTransport

    gate = Gate()
    t = DdsTransport(domain_id=random.randint(1, 200), config="loopback")
    node = LidarDetectionNodeCore(t, LidarDetectionParams(score_threshold=0.0), model=GatedDetector(gate))
    ex = Executor([node])
    try:
        clouds = t.create_publisher("/points", "sensor_msgs/msg/PointCloud2", SENSOR_DATA)
        dets: list = []
        t.create_subscription("/detections", DETECTIONS_TYPE, dets.append, DEFAULT)
        assert t.wait_for_matches(clouds, 1, timeout=10.0)
        clouds.publish(_cloud(3.0, stamp=5))
        assert ex.spin_until(lambda: gate.started.is_set(), timeout=10.0)
        assert node.worker.in_flight == 1
        gate.open.set()
        assert ex.spin_until(lambda: len(dets) == 1, timeout=10.0)
        assert msgs.stamp_ns(dets[0]) == 5 and gate.threads == {f"{node.name}-worker"}
    finally:
        gate.open.set()
        ex.close()
        t.close()
