"""latentstack: robot policies and perception models that share one latent-state API."""

__version__ = "0.1.0"
