"""Multi-modal perception on a real ROS 2 install: simulated driving rig (LiDAR + 2 cameras + TF) -> UniLION.

    ros2 launch latentstack perception_unilion.launch.py model:=/abs/path/policies/unilion_tiny mode:=LCT frames:=8

Same graph as ros/graphs/perception_unilion.yaml (which `lstack launch` runs without ROS). Parameters come from
share/latentstack/config/<node>.yaml, overridden by the launch arguments below. With ``sensors:=false`` only the
detection node (and its markers) start, for real drivers publishing /unilion/points, /unilion/cam{0,1}/image_raw
and camera_info, the camera mounts on /tf_static and odom -> base_link on /tf.
RViz / Foxglove: /unilion/markers (MarkerArray), /unilion/bev/{objects,drivable,occupancy} (OccupancyGrid).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("latentstack"), "config"])
    sensors = IfCondition(LaunchConfiguration("sensors"))
    args = [
        DeclareLaunchArgument("model", default_value=PathJoinSubstitution(
            [FindPackageShare("latentstack"), "policies", "unilion_tiny"]), description="UniLION checkpoint"),
        DeclareLaunchArgument("mode", default_value="LCT", description="L | LT | LC | LCT"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu | cuda | cuda:N | mps"),
        DeclareLaunchArgument("sensors", default_value="true",
                              description="start the simulated driving rig (false: real drivers)"),
        DeclareLaunchArgument("frames", default_value="8", description="frames of the simulated sequence"),
        DeclareLaunchArgument("lockstep", default_value="true",
                              description="send the next frame when the detector answered (false: rate_hz)"),
        DeclareLaunchArgument("record", default_value="false", description="also run the MCAP recorder"),
        DeclareLaunchArgument("bag_path", default_value="outputs/perception_unilion_bag",
                              description="recorder output"),
    ]
    scene = Node(
        package="latentstack", executable="unilion_scene_node", name="unilion_scene", namespace="unilion",
        output="screen", condition=sensors,
        parameters=[PathJoinSubstitution([config, "unilion_scene.yaml"]), {
            "frames": LaunchConfiguration("frames"), "lockstep": LaunchConfiguration("lockstep")}],
    )
    detection = Node(
        package="latentstack", executable="unilion_detection_node", name="unilion_detection", namespace="unilion",
        output="screen",
        parameters=[PathJoinSubstitution([config, "unilion_detection.yaml"]), {
            "model": LaunchConfiguration("model"), "mode": LaunchConfiguration("mode"),
            "device": LaunchConfiguration("device")}],
    )
    markers = Node(
        package="latentstack", executable="detection_markers_node", name="detection_markers", namespace="unilion",
        output="screen", parameters=[PathJoinSubstitution([config, "detection_markers.yaml"])],
    )
    recorder = Node(
        package="latentstack", executable="recorder_node", name="recorder", output="screen",
        condition=IfCondition(LaunchConfiguration("record")),
        parameters=[PathJoinSubstitution([config, "recorder.yaml"]), {
            "path": LaunchConfiguration("bag_path"),
            "topics": ["/unilion/points:sensor_msgs/msg/PointCloud2",
                       "/unilion/cam0/image_raw:sensor_msgs/msg/Image",
                       "/unilion/cam1/image_raw:sensor_msgs/msg/Image",
                       "/unilion/ground_truth:vision_msgs/msg/Detection3DArray",
                       "/unilion/detections:vision_msgs/msg/Detection3DArray",
                       "/unilion/bev/objects:nav_msgs/msg/OccupancyGrid",
                       "/unilion/bev/drivable:nav_msgs/msg/OccupancyGrid",
                       "/unilion/bev/occupancy:nav_msgs/msg/OccupancyGrid",
                       "/tf:tf2_msgs/msg/TFMessage"]}],
    )
    return LaunchDescription([*args, scene, detection, markers, recorder])
