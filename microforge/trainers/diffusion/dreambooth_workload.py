"""The ``dreambooth`` workload: DreamBooth fine-tuning of a local Stable Diffusion pipeline on the
images of one phase of an embryo image folder, with optional prior preservation.

``microforge train dreambooth --pretrained PIPELINE_DIR --data FOLDER --phase t2 --steps N
[--prior-preservation --class-images 200 --prior-weight 1.0] [--train-text-encoder]``. The
defaults are the original project's (512 px, batch 1, lr 7e-6: the ``original`` recipe); the
instance prompt is the phase's prompt from the one template that image folders caption with and
generation prompts with, and the class prompt is that template without the phase. The run
exports its last checkpoint (DreamBooth's loss does not rank checkpoints). The artifact's
``diffusers/`` folder is the fine-tuned pipeline; ``microforge generate diffusion`` samples it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import Field

from microforge.platform.config import ConfigModel
from microforge.platform.errors import ConfigError, DatasetError
from microforge.trainers.workload import Cadence, RunPlan, Workload

from .data import TRANSFORM, folder_split

if TYPE_CHECKING:
    import ray.data

    from microforge.trainers.data import EpochContext

__all__ = ["DREAMBOOTH", "DreamboothOptions", "PhaseImages", "plan_dreambooth", "probe_dreambooth"]


class DreamboothOptions(ConfigModel):
    """Options of ``microforge train dreambooth``."""

    pretrained: Optional[str] = Field(None, description="local Stable Diffusion pipeline directory (diffusers "
                                                        "save_pretrained layout; hub ids are never downloaded)")
    data: Optional[str] = Field(None, description="embryo image folder whose --phase images are the instance images")
    phase: Optional[str] = Field(None, description="the phase to fine-tune on (e.g. t2)")
    resolution: int = Field(512, ge=8, le=2048, description="image side in pixels (a multiple of 8)")
    lr: float = Field(7e-6, gt=0, le=1, description="AdamW learning rate (constant)")
    weight_decay: float = Field(1e-2, ge=0, le=1, description="AdamW weight decay")
    train_text_encoder: bool = Field(False, description="train the text encoder too (else it stays frozen)")
    prior_preservation: bool = Field(False, description="add the prior-preservation loss on class images")
    class_images: int = Field(200, ge=1, le=100_000, description="class images drawn by the pretrained pipeline")
    prior_weight: float = Field(1.0, ge=0, le=100, description="weight of the prior-preservation loss")
    class_prompt: Optional[str] = Field(None, description="class prompt (default: the prompt template without "
                                                          "its phase)")
    class_steps: int = Field(50, ge=1, le=1000, description="sampling steps of each class image")
    class_guidance: float = Field(7.5, ge=0, le=100, description="guidance scale of the class images")
    class_scheduler: Literal["ddpm", "ddim", "dpm"] = Field("dpm", description="sampler of the class images")
    class_batch_size: int = Field(4, ge=1, le=256, description="class images drawn per batch (part of their identity)")
    class_dir: Optional[str] = Field(None, description="class-image cache (default: <--out>/class-images); "
                                                       "one subfolder per pipeline, prompt, count and sampler")
    preset: Literal["original"] = Field("original", description="training recipe (its batch size); explicit "
                                                                "flags win")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the class images and the training noise")


@dataclass(frozen=True)
class PhaseImages:
    """The ``train`` split: the rows of one phase of an embryo image folder (no validation)."""

    folder: str
    phase: str
    rows_per_task: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", str(Path(self.folder).absolute()))
        if not self._rows:
            raise DatasetError(f"{self.folder} has no images of phase {self.phase} to fine-tune on")

    @cached_property
    def _split(self) -> str:
        return folder_split(self.folder)

    @cached_property
    def _rows(self) -> int:
        from microforge.datasets.embryo.layout import PHASE_INDEX
        from microforge.datasets.manifest import read_manifest

        table = read_manifest(self.folder)
        index = PHASE_INDEX[self.phase]
        splits = table.column("split").to_pylist() if "split" in table.column_names else [self._split] * table.num_rows
        phases = table.column("phase_index").to_pylist()
        return sum(1 for p, s in zip(phases, splits) if p == index and s == self._split)

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "phase": self.phase, "rows_per_task": self.rows_per_task}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def describe(self) -> dict[str, Any]:
        return {"folder": self.folder, "phase": self.phase, "rows_per_task": self.rows_per_task}

    def splits(self) -> dict[str, str]:
        return {"train": self._split}

    def driver_datasets(self) -> dict[str, "ray.data.Dataset"]:
        from microforge.datasets.embryo.layout import PHASE_INDEX
        from microforge.datasets.manifest import manifest_dataset

        index = PHASE_INDEX[self.phase]
        ds = manifest_dataset(self.folder, self._split, columns=("image", "phase_index", "index"), transform=TRANSFORM,
                              rows_per_task=self.rows_per_task)
        # Materialised once: epochs of a few instance images would otherwise decode the whole folder each time.
        return {"train": ds.filter(expr=f"phase_index == {index}").materialize()}

    def epoch_splits(self) -> tuple[str, ...]:
        return ()

    def epoch_dataset(self, split: str, ctx: "EpochContext") -> "ray.data.Dataset":
        raise DatasetError(f"PhaseImages has only static splits; '{split}' is not regenerated per epoch")

    def rows_per_worker(self, split: str, world_size: int) -> int | None:
        return self._rows // world_size if split == "train" else None


def _prompt_template(folder: str) -> str:
    """The template the folder's captions were written with (the shared one for older folders)."""
    from microforge.datasets.embryo.layout import PROMPT_TEMPLATE

    try:
        template = json.loads((Path(folder) / "dataset.json").read_text()).get("prompt_template")
    except (OSError, ValueError, AttributeError):
        template = None
    return template if isinstance(template, str) and "{phase}" in template else PROMPT_TEMPLATE


def plan_dreambooth(options: DreamboothOptions) -> RunPlan:
    """Module config and data of a DreamBooth run (checked on the driver, before anything is written).

    Raises:
        ConfigError: no or a bad --pretrained, no --data or --phase, an unknown phase, a resolution
            that is not a multiple of 8.
        DatasetError: a folder that is not an embryo image folder or has no image of the phase.
    """
    from microforge.datasets.embryo.layout import check_phase

    from .pipeline import check_pipeline_dir, class_prompt_of

    pretrained = check_pipeline_dir(options.pretrained)
    if options.data is None:
        raise ConfigError("--data is required: an embryo image folder (microforge data embryo image-folder)")
    if options.phase is None:
        raise ConfigError("--phase is required: the phase whose images DreamBooth fine-tunes on (e.g. t2)")
    phase = check_phase(options.phase)
    if options.resolution % 8:
        raise ConfigError(f"--resolution must be a multiple of 8, got {options.resolution}")
    if not Path(options.data).is_dir():
        raise DatasetError(f"--data {options.data} does not exist (an embryo image folder)")
    data = PhaseImages(options.data, phase)
    template = _prompt_template(options.data)
    config = options.to_json_dict()
    module_config = {k: config[k] for k in ("resolution", "lr", "weight_decay", "train_text_encoder",
                                            "prior_preservation", "class_images", "prior_weight", "class_steps",
                                            "class_guidance", "class_scheduler", "class_batch_size")}
    module_config.update(pretrained=str(pretrained), phase=phase, prompt_template=template,
                         instance_prompt=template.format(phase=phase),
                         class_prompt=options.class_prompt or class_prompt_of(template), class_seed=options.seed,
                         class_dir=str(Path(options.class_dir).absolute()) if options.class_dir else None)
    # The last checkpoint is the fine-tuned model: rank by step, not by a loss that only falls noisily.
    return RunPlan(module_config, data, monitor="step", mode="max")


def probe_dreambooth(preset: str, resolution: int):
    """Raises: ConfigError: a batch-size probe needs a pipeline, which no preset names."""
    raise ConfigError("the dreambooth workload has no batch-size probe: its model is the --pretrained pipeline "
                      "(try --batch-size 1, the original's, and raise it while it fits)")


DREAMBOOTH = Workload(
    name="dreambooth",
    description="DreamBooth fine-tuning of a local Stable Diffusion pipeline on one embryo phase "
                "(prior preservation, class images cached)",
    module="microforge.trainers.diffusion.dreambooth:DreamBoothModule",
    options="microforge.trainers.diffusion.dreambooth_workload:DreamboothOptions",
    plan="microforge.trainers.diffusion.dreambooth_workload:plan_dreambooth",
    presets=("original",),
    metric="loss",
    mode="min",
    cadence=Cadence(every=100, unit="steps"),
    components=("unet",),
    transform=TRANSFORM,
    serve_task="generate",  # the artifact holds the whole fine-tuned pipeline (diffusers/)
    probe="microforge.trainers.diffusion.dreambooth_workload:probe_dreambooth",
    preset_option="preset",
    size_option="resolution",
    gradient_clip_val=1.0,
    recipes="microforge.trainers.diffusion.dreambooth_recipes",
    recipe_option="preset",
)
