"""Perception on a real ROS 2 install: simulated LiDAR + stereo sensors -> LION detection + stereo depth, and
with ``unilion:=true`` a simulated driving rig (LiDAR + 2 cameras + TF) -> UniLION detection / BEV maps.

    ros2 launch latentstack perception.launch.py lidar_model:=/abs/path/policies/lion_tiny \
        stereo_model:=/abs/path/policies/stereo_sa2_tiny frames:=100
    ros2 launch latentstack perception.launch.py unilion:=true unilion_mode:=LC \
        unilion_model:=/abs/path/policies/unilion_tiny

Same graph as ros/graphs/perception.yaml (which `lstack launch` runs without ROS; there the UniLION nodes are
``enabled: false`` and ``--enable unilion_scene,unilion_detection,unilion_markers`` turns them on). Parameters come
from share/latentstack/config/<node>.yaml, overridden by the launch arguments below. With ``sensors:=false`` only
the perception nodes start, for real drivers publishing on /lidar/points and /stereo/{left,right}/... (and, with
``unilion:=true``, /unilion/points, /unilion/cam{0,1}/image_raw + camera_info, the camera mounts on /tf_static and
odom -> base_link on /tf). RViz / Foxglove: /lidar/markers and /lidar/ground_truth/markers (MarkerArray),
/stereo/depth (32FC1), /unilion/markers (MarkerArray), /unilion/bev/{objects,drivable,occupancy} (OccupancyGrid).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
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
        DeclareLaunchArgument("unilion", default_value="false",
                              description="also start the UniLION driving rig (with sensors) and detector"),
        DeclareLaunchArgument("unilion_model", default_value=PathJoinSubstitution(
            [FindPackageShare("latentstack"), "policies", "unilion_tiny"]), description="UniLION checkpoint"),
        DeclareLaunchArgument("unilion_mode", default_value="LCT", description="UniLION tokens: L | LT | LC | LCT"),
        DeclareLaunchArgument("unilion_frames", default_value="8",
                              description="frames of the simulated driving sequence (8: a test sequence)"),
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
    # the UniLION nodes only with unilion:=true (the group's condition); the rig also needs sensors:=true (its own)
    unilion = GroupAction(condition=IfCondition(LaunchConfiguration("unilion")), actions=[
        Node(package="latentstack", executable="unilion_scene_node", name="unilion_scene", namespace="unilion",
             output="screen", condition=sensors,
             parameters=[PathJoinSubstitution([config, "unilion_scene.yaml"]), {
                 "frames": LaunchConfiguration("unilion_frames"), "lockstep": LaunchConfiguration("lockstep")}]),
        Node(package="latentstack", executable="unilion_detection_node", name="unilion_detection",
             namespace="unilion", output="screen",
             parameters=[PathJoinSubstitution([config, "unilion_detection.yaml"]), {
                 "model": LaunchConfiguration("unilion_model"), "mode": LaunchConfiguration("unilion_mode"),
                 "device": LaunchConfiguration("device")}]),
        Node(package="latentstack", executable="detection_markers_node", name="unilion_markers", namespace="unilion",
             output="screen", parameters=[PathJoinSubstitution([config, "detection_markers.yaml"])]),
    ])
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
                       "/stereo/ground_truth/disparity:stereo_msgs/msg/DisparityImage",
                       # the UniLION topics (no messages unless unilion:=true)
                       "/unilion/points:sensor_msgs/msg/PointCloud2",
                       "/unilion/cam0/image_raw:sensor_msgs/msg/Image",
                       "/unilion/cam1/image_raw:sensor_msgs/msg/Image",
                       "/unilion/ground_truth:vision_msgs/msg/Detection3DArray",
                       "/unilion/detections:vision_msgs/msg/Detection3DArray",
                       "/unilion/bev/objects:nav_msgs/msg/OccupancyGrid",
                       "/unilion/bev/drivable:nav_msgs/msg/OccupancyGrid",
                       "/unilion/bev/occupancy:nav_msgs/msg/OccupancyGrid"]}],
    )
    return LaunchDescription([*args, lidar_scene, lidar_detection, markers, stereo_scene, stereo_depth, unilion,
                              recorder])
