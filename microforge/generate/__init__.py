"""Generation at scale: datasets of images from trained generators, with Ray Data.

``generate_dataset(artifact, n, out, seed=...)`` writes the same dataset format as ``synth``
(``images/``, ``manifest.parquet`` with each image's seed, ``dataset.json``), byte-identical
whatever the number of workers, and resumable. Importing this package is cheap (no torch or Ray).
"""

from .job import GenerationRequest, choose_component, generate_dataset, seed_of

__all__ = ["GenerationRequest", "choose_component", "generate_dataset", "seed_of"]
