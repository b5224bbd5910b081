"""Perception models that run beside the policy: ``lion/`` (LiDAR 3D detection) and ``stereo/`` (stereo depth)."""
