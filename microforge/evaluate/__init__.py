"""Evaluation: image-set comparison (Fréchet/kernel distances on pluggable features, texture,
morphology), and each workload's task metrics through its ``eval`` command."""
