"""Diffusion models on diffusers: the class-conditional DDPM workload (``ddpm``) and DreamBooth
fine-tuning of a local Stable Diffusion pipeline (``dreambooth``).

Importing this package is cheap; diffusers (and transformers) are imported where a model is built.
"""
