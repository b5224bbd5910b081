"""rclpy backend: only where a ROS 2 installation provides rclpy (never on the project's CI)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.rclpy


def test_rclpy_roundtrip():
    rclpy = pytest.importorskip("rclpy")
    from latentstack import msgs
    from latentstack.transport import make_transport

    rclpy.init()
    try:
        node = rclpy.create_node("latentstack_test")
        t = make_transport("rclpy", node=node)
        got = []
        t.create_subscription("/latentstack_test", "std_msgs/msg/String", lambda m: got.append(m.data))
        pub = t.create_publisher("/latentstack_test", "std_msgs/msg/String")
        for _ in range(50):
            pub.publish(msgs.string_msg("hello 0"))
            t.spin_once(0.05)
            if got:
                break
        assert got and got[0] == "hello 0"
        node.destroy_node()
    finally:
        rclpy.shutdown()


def test_without_rclpy_the_backend_says_so():
    from latentstack.transport.rclpy_backend import RCLPY_AVAILABLE

    if RCLPY_AVAILABLE:
        pytest.skip("rclpy is installed")
    from latentstack.transport import TransportError, make_transport

    with pytest.raises(TransportError, match="rclpy"):
        make_transport("rclpy", node=object())
