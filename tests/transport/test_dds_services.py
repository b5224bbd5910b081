"""Services with rmw_cyclonedds framing: the header splice, parameter services from a wire-spec client,
malformed requests, /rosout."""
from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from latentstack import msgs
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.transport import make_transport
from latentstack.transport.services import RequestHeader, reply_topic, request_topic, unwrap, wrap

sys.path.insert(0, str(Path(__file__).resolve().parent))


def test_request_header_splice_keeps_alignment():
    body = msgs.encode(msgs.new("rcl_interfaces/srv/GetParameters_Request", names=["ab"]))
    framed = wrap(RequestHeader(0x0102030405060708, -2), bytes(body))
    # encapsulation, then guid (uint64 LE), seq (int64 LE), then the fields as they were (16 keeps alignment)
    assert framed.hex() == ("00010000" "0807060504030201" "feffffffffffffff" "01000000" "03000000" "616200")
    header, back = unwrap(framed)
    assert header == RequestHeader(0x0102030405060708, -2) and back == bytes(body)
    assert msgs.decode(back, "rcl_interfaces/srv/GetParameters_Request").names == ["ab"]
    with pytest.raises(msgs.MessageDecodeError):
        unwrap(b"\x00\x01\x00\x00" + b"\x00" * 8)
    assert request_topic("/robot1/policy_node/get_parameters") == "rq/robot1/policy_node/get_parametersRequest"
    assert reply_topic("/policy_node/set_parameters") == "rr/policy_node/set_parametersReply"


class _Still:
    def reset(self, seed=None):
        pass

    def select_action(self, obs):
        return np.zeros(4, np.float32)


@pytest.mark.dds
def test_parameter_services_rosout_and_bad_requests(dds_domain):
    from cyclonedds.domain import DomainParticipant
    from ros2_wire_client import GetParametersRequest, GetParametersResponse, ServiceClient

    t = make_transport("dds", domain_id=dds_domain, config="loopback")
    node = PolicyNodeCore(t, PolicyNodeParams(watchdog_timeout_s=5.0), policy=_Still(), namespace="/robot1")
    logs = []
    t.create_subscription("/rosout", "rcl_interfaces/msg/Log", logs.append, "transient_local")
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [t.spin_once(0.02) for _ in iter(stop.is_set, True)])
    spinner.start()
    dp = DomainParticipant(dds_domain)
    try:
        svc = node.parameter_services.services[1]  # get_parameters
        client = ServiceClient(dp, "/robot1/policy_node/get_parameters", GetParametersRequest,
                               GetParametersResponse)
        assert client.wait_for_service(20)
        reply = client.call(names=["trigger", "seed", "state_joints"])
        assert reply.values[0].string_value == "observation" and reply.values[1].integer_value == 0
        assert list(reply.values[2].string_array_value) == ["hand_x", "hand_y", "hand_z", "gripper"]
        # malformed frames and a failing handler: no reply, counted, the service keeps answering
        assert svc.handle(b"\x00\x01\x00\x00\x01\x02") is None and svc.handle(b"garbage") is None
        good = wrap(RequestHeader(1, 1), bytes(msgs.encode(msgs.new("rcl_interfaces/srv/GetParameters_Request",
                                                                    names=["seed"]))))
        handler, svc.handler = svc.handler, lambda req: 1 / 0
        assert svc.handle(good) is None
        svc.handler = handler
        assert svc.errors == 3 and unwrap(svc.handle(good))[0] == RequestHeader(1, 1)
        assert client.call(names=["seed"]).values[0].integer_value == 0
        node.log.warning("hello rosout")
        end = time.monotonic() + 5
        while time.monotonic() < end and not any(m.msg == "hello rosout" for m in logs):
            time.sleep(0.02)
        hello = next(m for m in logs if m.msg == "hello rosout")
        assert hello.level == 30 and hello.name == "robot1.policy_node"
    finally:
        stop.set()
        spinner.join()
        node.close()
        t.close()
        dp.__del__()
    assert not any(isinstance(h, logging.Handler) and type(h).__name__ == "RosoutHandler" for h in node.log.handlers)
