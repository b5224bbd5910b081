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
