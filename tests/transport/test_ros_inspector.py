"""``lstack ros``: topic list (types, hashes), topic echo, node list and param get/set against a live node."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from latentstack import msgs
from latentstack.cli import main
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.transport import make_transport

pytestmark = pytest.mark.dds


class _Still:
    def reset(self, seed=None):
        pass

    def select_action(self, obs):
        return np.zeros(4, np.float32)


def test_inspector_sees_the_graph_and_sets_parameters(dds_domain, capsys):
    t = make_transport("dds", domain_id=dds_domain, config="loopback")
    node = PolicyNodeCore(t, PolicyNodeParams(watchdog_timeout_s=0.1), policy=_Still())
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [node_spin(t, node) for _ in iter(stop.is_set, True)])
    spinner.start()
    d = ["--domain-id", str(dds_domain)]
    try:
        assert main(["ros", "topic", "list", "--hashes", "--wait", "1.5", *d]) == 0
        out = capsys.readouterr().out.splitlines()
        action = msgs.rihs01("latentstack_msgs/msg/ActionCommand", "jazzy")
        assert f"/action [latentstack_msgs/msg/ActionCommand] {action}" in out
        assert any(line.startswith("/camera/image_raw [sensor_msgs/msg/Image] RIHS01_d31d41a9") for line in out)
        assert any(line.startswith("/parameter_events [rcl_interfaces/msg/ParameterEvent]") for line in out)
        assert main(["ros", "node", "list", "--wait", "1.0", *d]) == 0
        assert capsys.readouterr().out.split() == ["/policy_node"]
        assert main(["ros", "topic", "echo", "/action", "--count", "1", "--wait", "1.0", *d]) == 0
        echoed = capsys.readouterr().out
        assert "kind: 1" in echoed and "sequence:" in echoed  # the watchdog hold of an idle policy node
        assert main(["ros", "param", "get", "/policy_node", "watchdog_timeout_s", *d]) == 0
        assert capsys.readouterr().out.strip() == "watchdog_timeout_s: 0.1"
        assert main(["ros", "param", "list", "/policy_node", *d]) == 0
        assert "steering_beta" in capsys.readouterr().out.split()
        assert main(["ros", "param", "set", "/policy_node", "trigger", "timer", *d]) == 1
        assert "fixed at start-up" in capsys.readouterr().out
        assert node.params.trigger == "observation"
    finally:
        stop.set()
        spinner.join()
        node.close()
        t.close()


def node_spin(t, node):
    from latentstack.nodes import Executor

    Executor([node]).spin_once(0.02)


def test_inspector_over_zenoh(capsys):
    from latentstack.transport.zenoh import free_loopback_endpoint, zenoh_available

    if not zenoh_available():
        pytest.skip("eclipse-zenoh / xxhash not installed")
    ep = free_loopback_endpoint()
    t = make_transport("zenoh", domain_id=7, config="loopback", listen=[ep])
    node = PolicyNodeCore(t, PolicyNodeParams(watchdog_timeout_s=0.1), policy=_Still())
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [node_spin(t, node) for _ in iter(stop.is_set, True)])
    spinner.start()
    z = ["--transport", "zenoh", "--zenoh-config", "loopback", "--zenoh-connect", ep, "--domain-id", "7"]
    try:
        assert main(["ros", "topic", "list", "--hashes", "--wait", "1.5", *z]) == 0
        out = capsys.readouterr().out.splitlines()
        action = msgs.rihs01("latentstack_msgs/msg/ActionCommand", "jazzy")
        assert f"/action [latentstack_msgs/msg/ActionCommand] {action}" in out
        assert main(["ros", "node", "list", "--wait", "1.0", *z]) == 0
        assert capsys.readouterr().out.split() == ["/policy_node"]
        assert main(["ros", "topic", "echo", "/action", "--count", "1", "--wait", "1.0", *z]) == 0
        assert "kind: 1" in capsys.readouterr().out
        assert main(["ros", "param", "get", "/policy_node", "trigger", *z]) == 1  # DDS-only, said clearly
        assert "DDS only" in capsys.readouterr().err
    finally:
        stop.set()
        spinner.join()
        node.close()
        t.close()
