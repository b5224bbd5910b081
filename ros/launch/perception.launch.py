"""Perception on a real ROS 2 install: simulated LiDAR + stereo sensors -> LION detection + stereo depth.

    ros2 launch latentstack perception.launch.py lidar_model:=/abs/path/policies/lion_tiny \
        stereo_model:=/abs/path/policies/stereo_sa2_tiny frames:=100

Same graph as ros/graphs/perception.yaml (which `lstack launch` runs without ROS). Parameters come from
share/latentstack/config/<node>.yaml, overridden by the launch arguments below. With ``sensors:=false`` only
the perception nodes start, for real drivers publishing on /lidar/points and /stereo/{left,right}/...
RViz / Foxglove: /lidar/markers and /lidar/ground_truth/markers (MarkerArray), /stereo/depth (32FC1).
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
        DeclareLaunchArgument("lidar_model", default_value=PathJoinSubstitution(
            [FindPackageShare("latentstack"), "policies", "lion_tiny"]), description="LION checkpoint"),
        DeclareLaunchArgument("stereo_model", default_value=PathJoinSubstitution(
            [FindPackageShare("latentstack"), "policies", "stereo_sa2_tiny"]),
                              description="stereo depth checkpoint"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu | cuda | cuda:N | mps"),
        DeclareLaunchArgument("sensors", default_value="true",
                              description="start the simulated LiDAR and stereo sensors (false: real drivers)"),
        DeclareLaunchArgument("frames", default_value="10", description="frames each simulated sensor streams"),
        DeclareLaunchArgument("lockstep", default_value="true",
                              description="send the next frame when the perception node answered (false: rate_hz)"),
        DeclareLaunchArgument("turbidity", default_value="1.0", description="underwater turbidity of the stereo pairs"),
        DeclareLaunchArgument("record", default_value="false", description="also run the MCAP recorder"),
        DeclareLaunchArgument("bag_path", default_value="outputs/perception_bag", description="recorder output"),
    ]
    lidar_scene = Node(
        package="latentstack", executable="lidar_scene_node", name="lidar_scene", namespace="lidar",
        output="screen", condition=sensors,
        parameters=[PathJoinSubstitution([config, "lidar_scene.yaml"]), {
            "frames": LaunchConfiguration("frames"), "lockstep": LaunchConfiguration("lockstep")}],
    )
    lidar_detection = Node(
        package="latentstack", executable="lidar_detection_node", name="lidar_detection", namespace="lidar",
        output="screen",
        parameters=[PathJoinSubstitution([config, "lidar_detection.yaml"]), {
            "model": LaunchConfiguration("lidar_model"), "device": LaunchConfiguration("device")}],
    )
    markers = Node(
        package="latentstack", executable="detection_markers_node", name="detection_markers", namespace="lidar",
        output="screen", parameters=[PathJoinSubstitution([config, "detection_markers.yaml"])],
    )
    stereo_scene = Node(
        package="latentstack", executable="stereo_scene_node", name="stereo_scene", namespace="stereo",
        output="screen", condition=sensors,
        parameters=[PathJoinSubstitution([config, "stereo_scene.yaml"]), {
            "frames": LaunchConfiguration("frames"), "lockstep": LaunchConfiguration("lockstep"),
            "turbidity": LaunchConfiguration("turbidity")}],
    )
    stereo_depth = Node(
        package="latentstack", executable="stereo_depth_node", name="stereo_depth", namespace="stereo",
        output="screen",
        parameters=[PathJoinSubstitution([config, "stereo_depth.yaml"]), {
            "model": LaunchConfiguration("stereo_model"), "device": LaunchConfiguration("device")}],
    )
    recorder = Node(
        package="latentstack", executable="recorder_node", name="recorder", output="screen",
        condition=IfCondition(LaunchConfiguration("record")),
        parameters=[PathJoinSubstitution([config, "recorder.yaml"]), {
            "path": LaunchConfiguration("bag_path"),
            "topics": ["/lidar/points:sensor_msgs/msg/PointCloud2",
                       "/lidar/ground_truth:vision_msgs/msg/Detection3DArray",
                       "/lidar/detections:vision_msgs/msg/Detection3DArray",
                       "/lidar/markers:visualization_msgs/msg/MarkerArray",
                       "/stereo/left/image_rect:sensor_msgs/msg/Image",
                       "/stereo/right/image_rect:sensor_msgs/msg/Image",
                       "/stereo/depth:sensor_msgs/msg/Image",
                       "/stereo/disparity:stereo_msgs/msg/DisparityImage",
                       "/stereo/ground_truth/disparity:stereo_msgs/msg/DisparityImage"]}],
    )
    return LaunchDescription([*args, lidar_scene, lidar_detection, markers, stereo_scene, stereo_depth, recorder])
