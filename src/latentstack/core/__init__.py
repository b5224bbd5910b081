"""Shared foundations every layer may use: package-data paths, the config base + type registry, the one
artifact format. Nothing here imports a model, a simulator or a transport."""
