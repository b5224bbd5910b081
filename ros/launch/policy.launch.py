"""The policy node alone, for a real robot or another simulator publishing the same topics.

    ros2 launch latentstack policy.launch.py policy:=/abs/path/to/checkpoint namespace:=robot1 \
        control_rate_hz:=20.0

Inputs: camera/image_raw (Image), joint_states (JointState), instruction (String, latched).
Output: action (latentstack_msgs/ActionCommand, stamped and sequenced). Timer-triggered, with the stale-observation watchdog.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("latentstack"), "config"])
    args = [
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("policy", default_value=PathJoinSubstitution(
            [FindPackageShare("latentstack"), "policies", "vla_metaworld_mt6"])),
        DeclareLaunchArgument("control_rate_hz", default_value="20.0"),
        DeclareLaunchArgument("watchdog_timeout_s", default_value="0.25"),
    ]
    policy = Node(
        package="latentstack", executable="policy_node", name="policy_node",
        namespace=LaunchConfiguration("namespace"), output="screen",
        parameters=[PathJoinSubstitution([config, "policy_node.yaml"]), {
            "policy": LaunchConfiguration("policy"),
            "trigger": "timer",
            "control_rate_hz": LaunchConfiguration("control_rate_hz"),
            "watchdog_timeout_s": LaunchConfiguration("watchdog_timeout_s"),
        }],
    )
    return LaunchDescription([*args, policy])
