"""Issue 14: property-based fuzzing of the node input paths (hostile messages through the in-process bus).

Every message goes through the real path: encoded to CDR on publish, decoded by the subscription, then
the node's guarded callback. Properties (hypothesis, derandomized, bounded number of examples):

- LiDAR detection: hostile PointCloud2 layouts never raise out of a callback as anything but the
  project's message error (``callback_error`` stays 0), every cloud is either detected or counted as
  ``invalid_message``, the detector only sees finite (P, 4) float32 clouds within the point cap, and a
  valid cloud after the hostile ones is still served.
- Stereo depth: hostile images / camera infos are counted or accepted (never a bare exception), the
  model only sees pairs inside the size caps, and a valid pair afterwards still gives a depth image.
- Policy node (both triggers): interleaved hostile images, joint states (NaN, missing joints, future or
  negative stamps), episode events and instructions, with a policy that sometimes raises or returns
  NaN / the wrong size: every valid observation (lockstep) or tick (timer) gets exactly one action or
  hold, every published action is finite, of ``action_dim`` values and inside the bounds, a silent
  upstream gets a watchdog hold, and refused image/state messages are all accounted for in the counters.
"""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from latentstack import msgs
from latentstack.nodes import Executor
from latentstack.nodes.commands import ACTION_TYPE, KIND_ACTION, KIND_WATCHDOG_HOLD
from latentstack.nodes.interfaces import EpisodeEvent, episode_event_msg
from latentstack.nodes.lidar_detection import LidarDetectionNodeCore, LidarDetectionParams
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.nodes.stereo_depth import StereoDepthNodeCore, StereoDepthParams
from latentstack.perception.stereo.configuration_stereo import StereoConfig
from latentstack.perception.stereo.model import SA2Tiny
from latentstack.transport import DEFAULT, SENSOR_DATA, InProcTransport, NodeId

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

U32 = st.integers(0, 2**32 - 1)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
# any stamp builtin_interfaces/Time can carry (int32 seconds), plus small ones near the test clock
STAMPS = st.one_of(st.integers(-(2**31) * 10**9, 2**31 * 10**9 - 1), st.integers(0, 3 * 10**9))
PF_CODES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def _spin(t: InProcTransport, node: object = None) -> None:
    """Three rounds of delivery; with a perception node, its worker (where the model runs) drains after the first."""
    t.spin_once()
    if node is not None:
        assert node.wait_idle(120.0)
    for _ in range(2):
        t.spin_once()


def _no_errors(node: object) -> bool:
    """No exception other than the project's message error, in a callback or in the node's worker thread
    (the fake models assert on what they get: a failed assert there is a ``worker_error``)."""
    c = node.stats()["counters"]
    return c.get("callback_error", 0) == 0 and c.get("worker_error", 0) == 0


# ----------------------------------------------------------------------------- LiDAR
@st.composite
def clouds(draw: st.DrawFn) -> object:
    """PointCloud2 messages biased towards decodable x/y/z layouts, with hostile fields mixed in."""
    fields, off = [], 0
    names = draw(st.one_of(st.just(["x", "y", "z"]), st.just(["x", "y", "z", "intensity"]),
                           st.lists(st.sampled_from(["x", "y", "z", "intensity", "ring", "x"]), max_size=5)))
    for name in names:
        code = draw(st.sampled_from([7, 7, 7, 8, 2, 3, 5]))
        count = draw(st.sampled_from([1, 1, 1, 0, 3]))
        fields.append(msgs.new("sensor_msgs/msg/PointField", name=name, offset=off, datatype=code, count=count))
        off += np.dtype(PF_CODES[code]).itemsize * max(count, 1)
    ps = off + draw(st.integers(0, 2))
    h, w = draw(st.integers(0, 2)), draw(st.integers(0, 12))
    rs = w * ps + draw(st.integers(0, 3))
    n = max(0, h * rs + draw(st.sampled_from([0, 0, 0, 4, -1])))
    data = draw(st.binary(min_size=n, max_size=n))
    f = {"height": h, "width": w, "point_step": ps, "row_step": rs, "is_bigendian": draw(st.booleans())}
    hostile = {"height": U32, "width": U32, "point_step": st.one_of(st.integers(0, 40), U32), "row_step": U32}
    for k in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True)):
        f[k] = draw(hostile[k])
    frame = draw(st.one_of(TEXT, st.just("f" * 300)))
    return msgs.new("sensor_msgs/msg/PointCloud2", header=msgs.header(draw(STAMPS), frame), fields=fields,
                    data=np.frombuffer(data, np.uint8), is_dense=False, **f)


class CheckingDetector:
    """Fake detector that asserts what reaches it is a finite (P, 4) float32 cloud within the cap."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.calls = 0

    def detect(self, batch: list[np.ndarray]) -> list[dict]:
        for pts in batch:
            assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 4
            assert pts.shape[0] <= self.max_points and np.isfinite(pts).all()
        self.calls += 1
        return [{"boxes": np.ones((1, 7), np.float32), "scores": np.ones(1, np.float32),
                 "labels": np.zeros(1, np.int64)} for _ in batch]


@FUZZ
@given(hostile=st.lists(clouds(), min_size=1, max_size=4))
def test_lidar_node_survives_hostile_clouds(hostile: list) -> None:
    det = CheckingDetector(max_points=16)
    t = InProcTransport()
    node = LidarDetectionNodeCore(t, LidarDetectionParams(max_points=16, max_string_length=64), model=det)
    pub = t.create_publisher("/points", "sensor_msgs/msg/PointCloud2", SENSOR_DATA)
    out: list = []
    t.create_subscription("/detections", "vision_msgs/msg/Detection3DArray", out.append, DEFAULT)
    for m in hostile:
        before = node.frames + node.counters["invalid_message"]
        pub.publish(m)
        _spin(t, node)
        assert _no_errors(node)
        assert node.frames + node.counters["invalid_message"] == before + 1  # served or counted, never lost
    assert node.stats()["subscriptions"]["/points"]["decode_errors"] == 0
    good = np.zeros(5, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    frames = node.frames
    pub.publish(msgs.pointcloud2_from_numpy(good, stamp=7, frame_id="lidar"))
    _spin(t, node)
    assert node.frames == frames + 1 and det.calls == node.frames and len(out) == node.frames
    node.close()


# ----------------------------------------------------------------------------- stereo
class CapCheckingStereo(torch.nn.Module):
    """A real tiny stereo model that asserts the pairs it gets are inside the node's size caps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = SA2Tiny(StereoConfig(hidden=8, feat_dim=8, fmap_dim=8, enc_channels=(8, 8, 8, 8)))
        self.calls = 0

    def forward(self, *a, **k):
        self.calls += 1
        for v in (*a, *k.values()):  # padded (B, C, H, W) inputs: inside the caps rounded up to 16
            if torch.is_tensor(v) and v.dim() == 4:
                assert v.shape[-2] <= 32 and v.shape[-1] <= 64, v.shape
        return self.inner(*a, **k)


STEREO_MODEL = CapCheckingStereo()
STEREO_CAPS = {"min_width": 32, "min_height": 16, "max_width": 64, "max_height": 32}


@st.composite
def stereo_images(draw: st.DrawFn) -> object:
    stamp = draw(st.integers(0, 3)) * 10**6  # within the sync tolerance of each other: pairs form
    if draw(st.booleans()):  # a clean image inside the caps: pairs of them reach the model
        enc = draw(st.sampled_from(["rgb8", "bgr8"]))
        h, w = draw(st.sampled_from([(16, 32), (16, 32), (20, 33), (32, 64)]))
        data = np.full(h * w * 3, draw(st.integers(0, 255)), np.uint8)
        return msgs.new("sensor_msgs/msg/Image", header=msgs.header(stamp, "cam"), encoding=enc, height=h, width=w,
                        step=w * 3, data=data)
    enc = draw(st.sampled_from(["rgb8", "bgr8", "rgba8", "mono8", "32FC1", "yuv422", ""]))
    dtype, c = msgs.IMAGE_ENCODINGS.get(enc, ("uint8", 3))
    h, w = draw(st.sampled_from([0, 1, 15, 16, 33])), draw(st.sampled_from([0, 16, 31, 32, 65]))
    step = w * c * np.dtype(dtype).itemsize + draw(st.sampled_from([0, 0, 3]))
    n = max(0, h * step - draw(st.sampled_from([0, 0, 0, 1])))
    f = {"height": h, "width": w, "step": step}
    hostile = {"height": U32, "width": U32, "step": U32}
    for k in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=1)):
        f[k] = draw(hostile[k])
    frame = draw(st.one_of(TEXT, st.just("f" * 300)))
    return msgs.new("sensor_msgs/msg/Image", header=msgs.header(stamp, frame), encoding=enc,
                    data=np.full(n, draw(st.integers(0, 255)), np.uint8), **f)


def _info(k0: float, p3: float) -> object:
    m = msgs.camera_info(64, 32, 40.0, 40.0, 32, 16)
    m.k[0] = k0
    m.p[0], m.p[3] = k0, p3
    return m


FLOATS = st.one_of(st.floats(), st.sampled_from([40.0, -12.0, 0.0]))


@settings(FUZZ, max_examples=100)
@given(ops=st.lists(st.one_of(st.tuples(st.sampled_from(["left", "right"]), stereo_images()),
                              st.tuples(st.sampled_from(["left_info", "right_info"]), st.tuples(FLOATS, FLOATS))),
                    min_size=1, max_size=6))
def test_stereo_node_survives_hostile_inputs(ops: list) -> None:
    t = InProcTransport()
    node = StereoDepthNodeCore(t, StereoDepthParams(iters=1, **STEREO_CAPS), model=STEREO_MODEL)
    topics = {"left": ("/left/image_rect", "sensor_msgs/msg/Image"),
              "right": ("/right/image_rect", "sensor_msgs/msg/Image"),
              "left_info": ("/left/camera_info", "sensor_msgs/msg/CameraInfo"),
              "right_info": ("/right/camera_info", "sensor_msgs/msg/CameraInfo")}
    pubs = {k: t.create_publisher(topic, typ, SENSOR_DATA) for k, (topic, typ) in topics.items()}
    out: list = []
    t.create_subscription("/depth", "sensor_msgs/msg/Image", out.append, SENSOR_DATA)
    pubs["left_info"].publish(_info(40.0, -12.0))  # valid calibration first: hostile pairs can reach the model
    pubs["right_info"].publish(_info(40.0, -12.0))
    _spin(t, node)
    try:
        for kind, payload in ops:
            invalid = node.counters["invalid_message"]
            if kind in ("left", "right"):
                prev = getattr(node, f"_{kind}")
                pubs[kind].publish(payload)
                _spin(t, node)
                accepted = getattr(node, f"_{kind}") is not prev
            else:
                pubs[kind].publish(_info(*payload))
                _spin(t, node)
                k0, p3 = payload
                with np.errstate(all="ignore"):
                    b = -np.float64(p3) / np.float64(k0)
                accepted = (node._focal == k0) if kind == "left_info" else (node._baseline == b)
            assert _no_errors(node)
            assert accepted or node.counters["invalid_message"] == invalid + 1, (kind, payload)
        # a valid pair afterwards is still served
        pubs["left_info"].publish(_info(40.0, -12.0))
        pubs["right_info"].publish(_info(40.0, -12.0))
        frames = node.frames
        for side in ("left", "right"):
            pubs[side].publish(msgs.image_to_msg(np.zeros((16, 32, 3), np.uint8), stamp=10**9))
        _spin(t, node)
        assert node.frames == frames + 1 and len(out) == node.frames
        assert _no_errors(node)
    finally:
        node.close()


# ----------------------------------------------------------------------------- policy node
JOINTS = ["hand_x", "hand_y", "hand_z", "gripper"]
BEHAVIOURS = ["ok", "ok", "huge", "nan", "short", "raise"]


class MoodyPolicy:
    """Returns a fixed action, or misbehaves as told (NaN, wrong size, out of bounds, exception)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.resets: list = []
        self.bad_obs: list = []  # recorded, not asserted here: the node would swallow it as a policy_error

    def reset(self, seed=None) -> None:
        self.resets.append(seed)

    def select_action(self, obs: dict) -> np.ndarray:
        img, state = obs["image"], obs["state"]
        if not (img.ndim == 3 and img.shape[2] == 3 and img.size > 0 and img.dtype == np.uint8):
            self.bad_obs.append(("image", img.shape, img.dtype))
        if not (state.shape == (4,) and state.dtype == np.float32 and np.isfinite(state).all()):
            self.bad_obs.append(("state", state))
        if self.mode == "raise":
            raise RuntimeError("policy failure")
        return {"ok": np.float32([0.1, -0.2, 0.3, 0.5]), "huge": np.float32([1e30, -1e30, 5, 0.5]),
                "nan": np.float32([np.nan, 0, 0, 0]), "short": np.float32([0.1, 0.2])}[self.mode]

    def latent_sites(self) -> dict:
        return {}


@st.composite
def hostile_image(draw: st.DrawFn) -> object:
    enc = draw(st.sampled_from(["rgb8", "bgr8", "rgba8", "mono8", "16UC1", "jpeg"]))
    dtype, c = msgs.IMAGE_ENCODINGS.get(enc, ("uint8", 3))
    h, w = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    step = w * c * np.dtype(dtype).itemsize + draw(st.sampled_from([0, 0, 2]))
    f = {"height": h, "width": w, "step": step}
    for k in draw(st.lists(st.sampled_from(["height", "width", "step"]), max_size=1)):
        f[k] = draw(U32)
    n = max(0, h * step - draw(st.sampled_from([0, 0, 1])))
    return msgs.new("sensor_msgs/msg/Image", header=msgs.header(draw(STAMPS), draw(TEXT)), encoding=enc,
                    data=np.frombuffer(draw(st.binary(min_size=n, max_size=n)), np.uint8), **f)


@st.composite
def hostile_state(draw: st.DrawFn) -> object:
    names = draw(st.lists(st.sampled_from([*JOINTS, "other"]), max_size=6))
    n = draw(st.sampled_from([len(names), len(names), 0, len(names) + 1]))
    pos = np.asarray(draw(st.lists(st.floats(), min_size=n, max_size=n)), np.float64)
    return msgs.new("sensor_msgs/msg/JointState", header=msgs.header(draw(STAMPS)), name=names, position=pos)


@st.composite
def hostile_episode(draw: st.DrawFn) -> object:
    seed = draw(st.one_of(st.integers(0, 100), st.integers(-(2**70), 2**70)).map(str) | st.sampled_from(["", "x"]))
    kv = {"seed": seed, "task": draw(TEXT), "length": draw(st.sampled_from(["3", "", "z"])),
          "session": draw(st.sampled_from(["", "0", "7", "-1", "x", str(2**70)])),
          "index": draw(st.sampled_from(["", "0", "1", "-5", str(2**64)]))}
    return msgs.new("diagnostic_msgs/msg/DiagnosticStatus", name=draw(st.sampled_from(["episode", "other"])),
                    message=draw(st.sampled_from(["start", "end", "pause"])), values=msgs.kv_pairs(kv))


OPS = st.one_of(
    st.tuples(st.just("obs"), st.sampled_from(BEHAVIOURS)),
    st.tuples(st.just("image"), hostile_image()),
    st.tuples(st.just("state"), hostile_state()),
    st.tuples(st.just("episode"), hostile_episode()),
    st.tuples(st.just("instruction"), TEXT),
    st.tuples(st.just("silence"), st.floats(0.3, 5.0)),
)


# Regression (found by this suite): a position finite in float64 but beyond float32 (1e300) passed the
# JointState check and reached the policy as inf after the cast to the float32 state.
HUGE_STATE = [("state", msgs.joint_state(JOINTS, [1e300, 0.0, 0.0, 0.0], stamp=5 * 10**8)),
              ("image", msgs.image_to_msg(np.zeros((4, 4, 3), np.uint8), stamp=5 * 10**8))]


@settings(FUZZ, max_examples=150)
@given(trigger=st.sampled_from(["observation", "timer"]), ops=st.lists(OPS, min_size=1, max_size=12))
@example(trigger="observation", ops=HUGE_STATE)
def test_policy_node_always_answers(trigger: str, ops: list) -> None:
    clock = [10**9]
    t = InProcTransport(clock=lambda: clock[0])
    policy = MoodyPolicy()
    params = PolicyNodeParams(trigger=trigger, control_rate_hz=20.0, action_high=(1.0, 1.0, 1.0, 0.8))
    node = PolicyNodeCore(t, params, policy=policy)
    ex = Executor([node])
    pubs = {"image": t.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_DATA),
            "state": t.create_publisher("/joint_states", "sensor_msgs/msg/JointState", SENSOR_DATA),
            "episode": t.create_publisher("/episode", "diagnostic_msgs/msg/DiagnosticStatus", "transient_local",
                                          node=NodeId("sim_bridge")),
            "instruction": t.create_publisher("/instruction", "std_msgs/msg/String", "transient_local")}
    answers: list[tuple[int, np.ndarray]] = []
    t.create_subscription("/action", ACTION_TYPE, lambda m: answers.append(
        (int(m.kind), np.asarray(m.data, np.float32).copy())), DEFAULT)
    skew = int(node.params.max_clock_skew_s * 1e9)
    newest = -(2**63)  # newest stamp the node may have accepted (not beyond the clock skew when sent)
    try:
        for kind, arg in ops:
            n = len(answers)
            if kind == "obs":  # a valid observation at a stamp newer than anything accepted so far
                policy.mode = arg
                clock[0] += 10**7
                stamp = max(clock[0], newest + 1)
                clock[0] = stamp
                newest = stamp
                pubs["image"].publish(msgs.image_to_msg(np.full((4, 4, 3), 9, np.uint8), stamp=stamp))
                pubs["state"].publish(msgs.joint_state(JOINTS, [0.1, 0.2, 0.3, 0.0], stamp=stamp))
                _spin(t)
                if trigger == "observation":  # exactly one answer: the action, or the hold if the policy failed
                    assert len(answers) == n + 1 and answers[-1][0] == KIND_ACTION, (arg, answers[n:])
                else:  # timer mode: the next tick answers from this observation
                    clock[0] += 5 * 10**7
                    ex.spin_once()  # fires the timer; its output is delivered by the next spin
                    _spin(t)
                    assert len(answers) == n + 1
                if arg == "ok":
                    assert np.allclose(answers[-1][1], [0.1, -0.2, 0.3, 0.5])
                elif arg == "huge":  # clamped into the bounds
                    assert answers[-1][1].tolist() == [1.0, -1.0, 1.0, 0.5]
                else:  # NaN, wrong size or an exception: the hold (no motion)
                    assert answers[-1][1][:3].tolist() == [0, 0, 0]
            elif kind in ("image", "state"):
                c = node.counters
                before = node._seq + c["invalid_message"] + c["future_stamp"]
                stamp = msgs.stamp_ns(arg)
                if stamp <= clock[0] + skew:
                    newest = max(newest, stamp)
                pubs[kind].publish(arg)
                _spin(t)
                # accepted (a new sequence number) or counted as refused: never silently lost
                assert node._seq + c["invalid_message"] + c["future_stamp"] == before + 1, kind
            elif kind == "episode":
                pubs["episode"].publish(arg)
                _spin(t)
            elif kind == "instruction":
                pubs["instruction"].publish(msgs.string_msg(arg))
                _spin(t)
                assert node.instruction == arg
            else:  # silence: the watchdog (lockstep) or the next tick (timer) publishes exactly one hold
                clock[0] += int(arg * 1e9)
                ex.spin_once()
                _spin(t)
                assert len(answers) == n + 1 and answers[-1][0] == KIND_WATCHDOG_HOLD
                assert answers[-1][1][:3].tolist() == [0, 0, 0]
            assert node.counters["callback_error"] == 0 and node.counters["timer_error"] == 0
        for _label, a in answers:  # everything the robot ever received is a valid, clamped action
            assert a.shape == (4,) and np.isfinite(a).all()
            assert (a >= -1).all() and (a <= np.float32([1, 1, 1, 0.8])).all()
        assert all(s["decode_errors"] == 0 for s in node.stats()["subscriptions"].values())
        assert policy.bad_obs == []  # the policy only ever saw a non-empty rgb8 image and a finite state
    finally:
        node.close()


def test_fuzz_episode_start_still_resets_the_policy() -> None:
    """Sanity anchor for the fuzzed episode path: a valid start event reaches ``policy.reset``."""
    t = InProcTransport()
    policy = MoodyPolicy()
    node = PolicyNodeCore(t, PolicyNodeParams(), policy=policy)
    pub = t.create_publisher("/episode", "diagnostic_msgs/msg/DiagnosticStatus", "transient_local",
                             node=NodeId("sim_bridge"))
    pub.publish(episode_event_msg(EpisodeEvent("start", "reach", 2**63 - 1)))
    _spin(t)
    assert policy.resets[-1] == 2**63 - 1 and node.counters["episodes"] == 1
    node.close()


class _StillEnv:
    """The smallest env the sim bridge runs: records the actions it is given."""

    def __init__(self, task, image_size=4, camera="none", max_episode_steps=50, instruction=""):
        self.task, self.max_episode_steps, self.actions, self.t = task, max_episode_steps, [], 0

    def _obs(self):
        return {"image": np.zeros((4, 4, 3), np.uint8), "state": np.zeros(4, np.float32)}

    def reset(self, seed=None):
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.asarray(action, np.float32).copy())
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.max_episode_steps, {"success": False}

    def close(self):
        pass


@st.composite
def hostile_command(draw: st.DrawFn) -> object:
    n = draw(st.sampled_from([4, 4, 4, 0, 3, 5]))
    data = draw(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=n, max_size=n))
    return msgs.new(ACTION_TYPE, header=msgs.header(draw(st.sampled_from([0, 12_500_000, 2**31 * 10**9 - 1, -(10**9)]))),
                    session=draw(st.sampled_from([0, 1, 2, 2**64 - 1])), sequence=draw(st.integers(0, 2**64 - 1)),
                    kind=draw(st.integers(0, 255)), data=np.asarray(data, np.float32))


@settings(FUZZ, max_examples=150)
@given(cmds=st.lists(hostile_command(), min_size=1, max_size=10))
def test_sim_bridge_survives_hostile_commands(cmds: list) -> None:
    """Any ActionCommand: refused with a count or applied in range; the sim never raises and never stalls."""
    from latentstack.nodes.sim_bridge import Episode, SimBridgeCore, SimBridgeParams

    t = InProcTransport()
    sim = SimBridgeCore(t, SimBridgeParams(image_size=4), env_factory=_StillEnv,
                        episodes=[Episode("line-a", 1, "go", 50)])
    pub = t.create_publisher("/action", ACTION_TYPE, DEFAULT, node=NodeId("policy_node"))
    sim.start()
    for m in cmds:
        pub.publish(m)
        t.spin_once()
    c = sim.counters
    assert c["callback_error"] == 0
    for a in sim.env.actions:  # whatever was applied is finite and in the action space
        assert np.isfinite(a).all() and (np.abs(a) <= 1).all()
    valid = [m for m in cmds if int(m.kind) in (0, 1) and len(m.data) == 4 and np.isfinite(m.data).all()
             and m.session >= 1 and m.sequence >= 1]
    assert c["invalid_message"] == len(cmds) - len(valid)  # every malformed one counted as such
    sim.close()
