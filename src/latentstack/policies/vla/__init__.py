"""The project's small pi0-like VLA: config, word tokenizer and model."""

from latentstack.policies.vla.configuration_vla import (
    RUNTIME_FIELDS,
    VLA_PRESETS,
    VLAConfig,
    get_vla_config,
    register_vla_config,
)
from latentstack.policies.vla.modeling_vla import VLAPolicy
from latentstack.policies.vla.processor_vla import VLAInputs, VLAProcessor
from latentstack.policies.vla.tokenizer import WordTokenizer

__all__ = [
    "RUNTIME_FIELDS",
    "VLA_PRESETS",
    "VLAConfig",
    "VLAInputs",
    "VLAPolicy",
    "VLAProcessor",
    "WordTokenizer",
    "get_vla_config",
    "register_vla_config",
]
