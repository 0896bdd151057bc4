"""A tiny generator module for the Serve tests (``tests.serve.tiny_generator:TinyGenerator``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyGenerator(nn.Module):
    """Latent ``(latent_dim,)`` -> ``tanh`` images ``(channels, size, size)`` in [-1, 1]."""

    def __init__(self, latent_dim: int = 8, size: int = 8, channels: int = 1) -> None:
        super().__init__()
        self.config = {"latent_dim": latent_dim, "size": size, "channels": channels}
        self.latent_shape = (latent_dim,)
        self.fc = nn.Linear(latent_dim, channels * size * size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.config["channels"], self.config["size"]
        return torch.tanh(3.0 * self.fc(z)).view(-1, c, s, s)


def save_tiny_generator(directory, **config) -> None:
    """A generator artifact (task ``generate``) of a seeded TinyGenerator."""
    from microforge.platform.artifact import ComponentWeights, save_artifact

    torch.manual_seed(0)
    model = TinyGenerator(**config)
    save_artifact(directory, {"generator": ComponentWeights("tests.serve.tiny_generator:TinyGenerator",
                                                            model.config, model.state_dict())},
                  workload="tinygan", task="generate", transform={"name": "signed_unit", "params": {}},
                  preprocessing={}, metrics={}, provenance={"test": True})
