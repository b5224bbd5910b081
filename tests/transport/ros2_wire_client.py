"""A ROS 2 parameter client written from the wire spec (rmw_cyclonedds framing), with cyclonedds-python only.

Independent of the project's codec and server: hand-written IDL structs with the ROS 2 DDS type names and
``cdds_request_header_t {uint64 guid; int64 seq}`` in front of the request/response fields (spec ros2.md §1).
No ``from __future__ import annotations`` here: the IdlStruct metaclass reads the annotations at class creation.
"""
import time
from dataclasses import dataclass, field

from cyclonedds.core import Policy, Qos
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import byte, float64, int64, sequence, uint8, uint64
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration


@dataclass
class ParameterValue(IdlStruct, typename="rcl_interfaces::msg::dds_::ParameterValue_"):
    type: uint8 = 0
    bool_value: bool = False
    integer_value: int64 = 0
    double_value: float64 = 0.0
    string_value: str = ""
    byte_array_value: sequence[byte] = field(default_factory=list)
    bool_array_value: sequence[bool] = field(default_factory=list)
    integer_array_value: sequence[int64] = field(default_factory=list)
    double_array_value: sequence[float64] = field(default_factory=list)
    string_array_value: sequence[str] = field(default_factory=list)


@dataclass
class Parameter(IdlStruct, typename="rcl_interfaces::msg::dds_::Parameter_"):
    name: str
    value: ParameterValue


@dataclass
class SetParametersResult(IdlStruct, typename="rcl_interfaces::msg::dds_::SetParametersResult_"):
    successful: bool
    reason: str


@dataclass
class SetParametersRequest(IdlStruct, typename="rcl_interfaces::srv::dds_::SetParameters_Request_"):
    guid: uint64
    seq: int64
    parameters: sequence[Parameter]


@dataclass
class SetParametersResponse(IdlStruct, typename="rcl_interfaces::srv::dds_::SetParameters_Response_"):
    guid: uint64
    seq: int64
    results: sequence[SetParametersResult]


@dataclass
class GetParametersRequest(IdlStruct, typename="rcl_interfaces::srv::dds_::GetParameters_Request_"):
    guid: uint64
    seq: int64
    names: sequence[str]


@dataclass
class GetParametersResponse(IdlStruct, typename="rcl_interfaces::srv::dds_::GetParameters_Response_"):
    guid: uint64
    seq: int64
    values: sequence[ParameterValue]


QOS = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.Durability.Volatile, Policy.History.KeepAll,
          Policy.DataRepresentation(use_cdrv0_representation=True))


class ServiceClient:
    """``call(**fields)`` on ``rq/<svc>Request``, waits for the ``rr/<svc>Reply`` sample carrying our guid + seq."""

    def __init__(self, participant, service, request_cls, response_cls, guid=0x1234_5678_9ABC):
        self.writer = DataWriter(participant, Topic(participant, f"rq{service}Request", request_cls), qos=QOS)
        self.reader = DataReader(participant, Topic(participant, f"rr{service}Reply", response_cls), qos=QOS)
        self.request_cls, self.guid, self.seq = request_cls, guid, 0

    def wait_for_service(self, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.writer.get_matched_subscriptions() and self.reader.get_matched_publications():
                return True
            time.sleep(0.02)
        return False

    def call(self, timeout=10.0, **fields):
        self.seq += 1
        self.writer.write(self.request_cls(guid=self.guid, seq=self.seq, **fields))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for s in self.reader.take(N=16):
                if s.guid == self.guid and s.seq == self.seq:  # another client's reply is not ours
                    return s
            time.sleep(0.01)
        raise TimeoutError(f"no reply to request {self.seq}")
