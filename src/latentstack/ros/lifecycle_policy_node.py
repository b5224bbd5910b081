"""ROS 2 managed (lifecycle) node ``policy_node``: the policy node core under the lifecycle state machine.

    ros2 run latentstack lifecycle_policy_node --ros-args -p policy:=/path/to/checkpoint
    ros2 lifecycle set /policy_node configure   # parameters validated, the policy loaded (the slow part)
    ros2 lifecycle set /policy_node activate    # topics, watchdog and timers live: actions flow
    ros2 lifecycle set /policy_node deactivate  # one hold action, then the endpoints go; the policy stays loaded

For a robot whose bring-up orders its nodes (nav2-style lifecycle managers): the policy never commands
before ``activate``, and ``deactivate`` leaves the robot holding. The unmanaged ``policy_node`` runs the
same core at start-up.
"""
from __future__ import annotations

import sys
from typing import Any

from latentstack.ros._rclpy_node import RCLPY_AVAILABLE, attach_core, declare_parameters, params_from_ros

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - needs rclpy
    if not RCLPY_AVAILABLE:
        print("lifecycle_policy_node: rclpy is not importable; source a ROS 2 installation", file=sys.stderr)
        return 2
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.lifecycle import Node as LifecycleNode
    from rclpy.lifecycle import State, TransitionCallbackReturn

    from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams, load_policy
    from latentstack.transport.rclpy_backend import RclpyTransport

    class LifecyclePolicyNode(LifecycleNode):
        def __init__(self) -> None:
            super().__init__("policy_node")
            self.values = declare_parameters(self, PolicyNodeParams)
            self.params: PolicyNodeParams | None = None
            self.policy: Any = None
            self.core: PolicyNodeCore | None = None
            self.timers: list[Any] = []
            self.hook: Any = None

        def on_configure(self, state: State) -> TransitionCallbackReturn:
            try:
                values = {n: self.get_parameter(n).value for n in self.values if self.has_parameter(n)}
                self.params = params_from_ros(PolicyNodeParams, {**self.values, **values})
                self.policy = load_policy(self.params)
            except Exception as exc:  # noqa: BLE001 - a bad configuration is a failed transition, not a crash
                self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: State) -> TransitionCallbackReturn:
            assert self.params is not None
            try:
                if self.policy is None:  # re-activation: a fresh copy (the core applies the adapters to it again)
                    self.policy = load_policy(self.params)
                self.core = PolicyNodeCore(RclpyTransport(self), self.params, policy=self.policy,
                                           name=self.get_name(), namespace=self.get_namespace())
                self.timers, self.hook = attach_core(self, self.core)
            except Exception as exc:  # noqa: BLE001
                self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
                return TransitionCallbackReturn.FAILURE
            return super().on_activate(state)

        def on_deactivate(self, state: State) -> TransitionCallbackReturn:
            if self.core is not None:
                self.core._publish_hold("deactivated")  # the robot is left holding, not on the last action
                for t in self.timers:
                    self.destroy_timer(t)
                if self.hook is not None:
                    self.remove_on_set_parameters_callback(self.hook)
                self.core.close()
                self.core, self.timers, self.hook = None, [], None
                self.policy = None  # steering hooks and other adapters went onto this copy
            return super().on_deactivate(state)

        def on_cleanup(self, state: State) -> TransitionCallbackReturn:
            self.policy, self.params = None, None
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: State) -> TransitionCallbackReturn:
            if self.core is not None:
                self.on_deactivate(state)
            return self.on_cleanup(state)

    rclpy.init(args=sys.argv if argv is None else argv)
    node = LifecyclePolicyNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.core is not None:
            node.core.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
