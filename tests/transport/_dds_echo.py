"""Child process of the two-process DDS test: answers every /ping JointState with an Image and a /pong."""
import sys
import time

import numpy as np

from latentstack import msgs
from latentstack.transport import DEFAULT, NodeId, make_transport

domain, count = int(sys.argv[1]), int(sys.argv[2])
t = make_transport("dds", domain_id=domain, config="loopback")
node = NodeId("echo")
img_pub = t.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", DEFAULT, node=node)
pong_pub = t.create_publisher("/pong", "sensor_msgs/msg/JointState", DEFAULT, node=node)
seen = []


def on_ping(m):
    i = int(m.position[0])
    seen.append(i)
    img = np.full((8, 6, 3), i, np.uint8)
    img_pub.publish(msgs.image_to_msg(img, "rgb8", stamp=msgs.stamp_ns(m), frame_id="cam"))
    pong_pub.publish(msgs.joint_state(list(m.name), np.asarray(m.position) * 2, stamp=msgs.stamp_ns(m)))


t.create_subscription("/ping", "sensor_msgs/msg/JointState", on_ping, DEFAULT, node=node)
end = time.monotonic() + 20
while len(seen) < count and time.monotonic() < end:
    t.spin_once(0.05)
time.sleep(0.5)  # let reliable samples drain before the participant goes away
t.close()
sys.exit(0 if len(seen) == count else 3)
