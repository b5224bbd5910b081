"""MetaWorld closed loop on a real ROS 2 install: sim bridge + policy node (+ optional recorder).

    ros2 launch latentstack metaworld.launch.py policy:=/abs/path/to/policies/vla_metaworld_mt6

Same graph as ros/graphs/metaworld.yaml (which `lstack launch` runs without ROS). Parameters
come from share/latentstack/config/<node>.yaml, overridden by the launch arguments below.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("latentstack"), "config"])
    namespace = LaunchConfiguration("namespace")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node and topic"),
        DeclareLaunchArgument("policy", default_value=PathJoinSubstitution(
            [FindPackageShare("latentstack"), "policies", "vla_metaworld_mt6"]),
                              description="checkpoint directory, random:<dir>, or a registered policy name"),
        DeclareLaunchArgument("suite", default_value="metaworld_mt6", description="evaluation suite (sim/suites)"),
        DeclareLaunchArgument("episodes_per_task", default_value="1", description="episodes per task"),
        DeclareLaunchArgument("lockstep", default_value="true",
                              description="step the sim only when the action for its observation arrives"),
        DeclareLaunchArgument("record", default_value="false", description="also run the MCAP recorder"),
        DeclareLaunchArgument("bag_path", default_value="outputs/metaworld_bag", description="recorder output"),
    ]
    sim = Node(
        package="latentstack", executable="sim_bridge_node", name="sim_bridge", namespace=namespace,
        output="screen",
        parameters=[PathJoinSubstitution([config, "sim_bridge.yaml"]), {
            "suite": LaunchConfiguration("suite"),
            "episodes_per_task": LaunchConfiguration("episodes_per_task"),
            "lockstep": LaunchConfiguration("lockstep"),
        }],
    )
    policy = Node(
        package="latentstack", executable="policy_node", name="policy_node", namespace=namespace, output="screen",
        parameters=[PathJoinSubstitution([config, "policy_node.yaml"]), {
            "policy": LaunchConfiguration("policy"),
            "wait_for_episode": True,
        }],
    )
    recorder = Node(
        package="latentstack", executable="recorder_node", name="recorder", namespace=namespace, output="screen",
        condition=IfCondition(LaunchConfiguration("record")),
        parameters=[PathJoinSubstitution([config, "recorder.yaml"]), {"path": LaunchConfiguration("bag_path")}],
    )
    return LaunchDescription([*args, sim, policy, recorder])
