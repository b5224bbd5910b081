"""The common latent-state API: models declare ``latent_sites()``; ``Tap`` reads, ``Intervention`` writes."""
from .context import annotate, current_annotations
from .intervention import Intervention, assert_model_unchanged, module_snapshot
from .site import LatentSites, Site, site_name, sites_from_prefix
from .tap import Tap, TapRecord, load_tap_shards

__all__ = [
    "Intervention",
    "LatentSites",
    "Site",
    "Tap",
    "TapRecord",
    "annotate",
    "assert_model_unchanged",
    "current_annotations",
    "load_tap_shards",
    "module_snapshot",
    "site_name",
    "sites_from_prefix",
]
