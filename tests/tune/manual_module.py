"""A tiny manual-optimisation LightningModule (as GANs are) and its workload, for the batch-size
probe: Lightning refuses gradient clipping for such a module, so a probe must not set it."""

from typing import Literal

import torch
from pydantic import Field

from microforge.platform.config import ConfigModel
from microforge.trainers.lightning_import import pl
from microforge.trainers.workload import RunPlan, Workload


class ManualStepModule(pl.LightningModule):
    """Two optimizers stepped by hand, like a GAN's generator and discriminator."""

    def __init__(self, preset: str = "tiny", image_size: int = 16):
        super().__init__()
        self.automatic_optimization = False
        self.image_size = image_size
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 1, 3, padding=1)

    def example_batch(self, batch_size: int) -> dict:
        return {"image": torch.randn(batch_size, 1, self.image_size, self.image_size)}

    def training_step(self, batch, batch_idx):
        opt_a, opt_b = self.optimizers()
        for opt in (opt_a, opt_b):
            loss = self.b(self.a(batch["image"])).pow(2).mean()
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
        self.log("train_loss", loss)

    def configure_optimizers(self):
        return [torch.optim.SGD(self.a.parameters(), lr=0.01), torch.optim.SGD(self.b.parameters(), lr=0.01)]


class ManualOptions(ConfigModel):
    preset: Literal["tiny"] = Field("tiny", description="the one size")
    image_size: int = Field(16, ge=4, description="image side in pixels")


def plan_manual(options: ManualOptions) -> RunPlan:
    return RunPlan(options.to_json_dict(), data=None)


MANUAL = Workload(
    name="manual-step-test",
    description="a manual-optimisation module for the probe test",
    module="tests.tune.manual_module:ManualStepModule",
    options="tests.tune.manual_module:ManualOptions",
    plan="tests.tune.manual_module:plan_manual",
    presets=("tiny",),
    metric="train_loss",
    mode="min",
    optimization="manual",
    gradient_clip_val=None,
)
