"""The one table of model and artifact types: ``type`` name -> where its config class and its loader live.

Entries are ``"package.module:attr"`` strings, so looking a type up imports only that model's stack (reading
a quantized artifact never imports steering, loading a VLA never imports perception), and lower layers
(``core``, ``policies``) dispatch to upper ones (``quant``, ``steering``) without importing them. Every
artifact ``type`` written under ``policies/`` has a row here; a loader is called as
``load(path, *, device=None, **overrides)`` (see :class:`latentstack.core.artifacts.ArtifactType`).
"""

from __future__ import annotations

from latentstack.core.artifacts import register_artifact_type
from latentstack.core.config import register_lazy_config

# ----------------------------------------------------------------------------- VLA family
register_lazy_config("vla", "latentstack.policies.vla.configuration_vla:VLAConfig")
register_artifact_type("vla", "latentstack.policies.checkpoint:from_pretrained",
                       random="latentstack.policies.checkpoint:random_like")
# integer-quantized VLA (QuantVLA): derived from a "vla" artifact, named as its source
register_artifact_type("vla_quantized", "latentstack.quant.artifact:load_quantized_policy")
# COAST conceptors fitted on a "vla" artifact's latent site (not a policy: applied to one)
register_artifact_type("conceptor", "latentstack.steering.intervention:SteeringArtifact.load", kind="conceptor")

# ----------------------------------------------------------------------------- perception, KORR, ACT adapter
register_lazy_config("lion", "latentstack.perception.lion.configuration_lion:LionConfig")
register_artifact_type("lion", "latentstack.perception.lion.modeling_lion:load_detector", kind="detector")
register_lazy_config("unilion", "latentstack.perception.unilion.configuration_unilion:UniLIONConfig")
register_artifact_type("unilion", "latentstack.perception.unilion.modeling_unilion:load_unilion", kind="detector")
register_lazy_config("stereo", "latentstack.perception.stereo.configuration_stereo:StereoConfig")
register_artifact_type("stereo", "latentstack.perception.stereo.model:load_stereo_model", kind="depth")
# KORR: the chunked BC base is a policy; residual heads are derived from it (their source) and wrap a policy
register_lazy_config("korr_base", "latentstack.koopman.base_policy:ChunkBaseConfig")
register_artifact_type("korr_base", "latentstack.koopman.base_policy:load_base_policy")
register_lazy_config("korr_residual", "latentstack.koopman.configuration_korr:ResidualConfig")
register_artifact_type("korr_residual", "latentstack.koopman.artifact:load_residual_head", kind="residual")
# LeRobot's ACT behind the adapter: LeRobot's own files inside the artifact's lerobot/ folder
register_lazy_config("lerobot_act", "latentstack.policies.lerobot_act.configuration_act:ACTAdapterConfig")
register_artifact_type("lerobot_act", "latentstack.policies.lerobot_act.artifact:load_act_artifact",
                       random="latentstack.policies.lerobot_act.modeling_act:make_act_random_like")
