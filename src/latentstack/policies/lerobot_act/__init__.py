"""LeRobot ACT adapter: the real ``lerobot.policies.act`` model behind the project's Policy protocol."""
from .configuration_act import ACT_PRESETS, make_act_config
from .modeling_act import ACTAdapter, is_act_checkpoint, load_act_policy, make_act_random_like

__all__ = ["ACT_PRESETS", "ACTAdapter", "is_act_checkpoint", "load_act_policy", "make_act_config", "make_act_random_like"]
