"""TF frames as the node cores publish them: ``tf2_msgs/msg/TFMessage`` on ``/tf_static`` (latched) and ``/tf``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latentstack import msgs

__all__ = ["TF_QOS", "TF_STATIC_QOS", "TF_TYPE", "tf_message", "transform_stamped"]

TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_STATIC_QOS = "transient_local"  # tf2_ros StaticBroadcasterQoS: RELIABLE, TRANSIENT_LOCAL, depth 1
TF_QOS = "default"  # tf2_ros DynamicBroadcasterQoS: RELIABLE, VOLATILE, depth 100 (10 here)


def transform_stamped(parent: str, child: str, stamp_ns: int, xyz: Sequence[float] = (0.0, 0.0, 0.0),
                      quat_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0), distro: str | None = None) -> Any:
    """``geometry_msgs/TransformStamped``: ``child``'s pose in ``parent``."""
    x, y, z = (float(v) for v in xyz)
    qx, qy, qz, qw = (float(v) for v in quat_xyzw)
    return msgs.new("geometry_msgs/msg/TransformStamped", distro, header=msgs.header(stamp_ns, parent, distro),
                    child_frame_id=child, transform=msgs.new(
                        "geometry_msgs/msg/Transform", distro,
                        translation=msgs.new("geometry_msgs/msg/Vector3", distro, x=x, y=y, z=z),
                        rotation=msgs.new("geometry_msgs/msg/Quaternion", distro, x=qx, y=qy, z=qz, w=qw)))


def tf_message(transforms: Sequence[Any], distro: str | None = None) -> Any:
    return msgs.new(TF_TYPE, distro, transforms=list(transforms))
