"""Diffusion models on diffusers: the class-conditional DDPM workload (``ddpm``).

Importing this package is cheap; diffusers is imported where a model is built.
"""
