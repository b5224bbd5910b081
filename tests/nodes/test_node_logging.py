"""Issue 14 finding 7: bad messages cost a bounded number of log lines, and the dropped lines are counted."""
from __future__ import annotations

import logging

import numpy as np

from latentstack import msgs
from latentstack.nodes.base import RateLimitedLog
from latentstack.nodes.lidar_detection import LidarDetectionNodeCore, LidarDetectionParams
from latentstack.transport import SENSOR_DATA, InProcTransport


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_rate_limited_log_bursts_then_one_summary_with_the_count(caplog):
    clock = FakeClock()
    rl = RateLimitedLog(logging.getLogger("test.ratelimit"), burst=3, window_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        emitted = [rl.log("bad", logging.WARNING, "bad message %d", i) for i in range(100)]
        rl.log("other", logging.WARNING, "another key has its own budget")
        assert emitted == [True] * 3 + [False] * 97
        assert len(caplog.records) == 4
        clock.t = 10.0  # next window: first the summary of what was dropped, then the line itself
        assert rl.log("bad", logging.WARNING, "bad message again")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6 and "97" in lines[4] and "suppressed" in lines[4] and lines[5] == "bad message again"
    assert rl.suppressed == {"bad": 97}
    clock.t = 15.0
    for _ in range(5):
        rl.log("bad", logging.WARNING, "x")
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        caplog.clear()
        rl.flush()  # e.g. on node close: pending counts are not lost
    assert len(caplog.records) == 1 and "3 " in caplog.records[0].getMessage()
    assert rl.suppressed == {"bad": 100}


class RaisingDetector:
    def detect(self, clouds):
        raise RuntimeError("model blew up")


def test_a_flood_of_failing_messages_logs_a_bounded_number_of_lines(caplog):
    t = InProcTransport()
    node = LidarDetectionNodeCore(t, LidarDetectionParams(), model=RaisingDetector())
    pub = t.create_publisher("/points", "sensor_msgs/msg/PointCloud2", SENSOR_DATA)
    cloud = np.zeros(8, dtype=[("x", np.float32), ("y", np.float32), ("z", np.float32)])
    bad_layout = msgs.pointcloud2_from_numpy(cloud)
    bad_layout.point_step = 0  # a malformed message (MessageError path)
    n = 300
    with caplog.at_level(logging.WARNING, logger="latentstack.nodes"):
        for _ in range(n):
            pub.publish(msgs.pointcloud2_from_numpy(cloud))  # model raises (traceback path)
            pub.publish(bad_layout)
            t.spin_once()
            assert node.wait_idle(120.0)  # the detector raises on the node's worker thread: every cloud reaches it
    records = [r for r in caplog.records if r.name.startswith("latentstack.nodes")]
    # before: one full traceback per message (300) — now a burst per key, then silence until the window ends
    assert len(records) <= 2 * RateLimitedLog.DEFAULT_BURST, len(records)
    counters = node.stats()["counters"]
    assert counters["worker_error"] == n and counters["invalid_message"] == n
    assert counters.get("frames_dropped_busy", 0) == 0 and node.worker.threaded
    suppressed = node.stats()["log_suppressed"]
    assert sum(suppressed.values()) == 2 * n - len(records)
