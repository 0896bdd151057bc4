"""A U-Net trainer whose training crashes once, at the start of its second epoch (for the restore test).

Imported by Ray workers through its import path; the driver's working directory (the repository
root under ``python -m pytest``) is on their ``sys.path``.
"""

from dataclasses import replace
from pathlib import Path

from microforge.trainers.unet.lightning import UNetModule
from microforge.tune import TunableTrainer
from microforge.tune.unet import unet_tuning_job

MODULE = "tests.tune.crashing:CrashOnceUNet"


class CrashOnceUNet(UNetModule):
    """A :class:`UNetModule` whose second epoch raises at its start unless ``crash_marker`` exists
    (the crash creates it), so the first epoch's checkpoint is the run's latest."""

    def __init__(self, crash_marker: str = "", **kwargs):
        super().__init__(**kwargs)
        self.crash_marker = crash_marker

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == 1 and self.crash_marker and not Path(self.crash_marker).exists():
            Path(self.crash_marker).write_text("crashed once")
            raise RuntimeError("injected crash at the start of epoch 2")
        super().on_train_epoch_start()


def crash_once_job(params, *, epochs, runs_dir, name):
    params = dict(params)
    marker = params.pop("crash_marker")
    job = unet_tuning_job(params, epochs=epochs, runs_dir=runs_dir, name=name)
    return replace(job, module=MODULE, module_config={**job.module_config, "crash_marker": marker})


CRASH_ONCE = TunableTrainer(name="crash-once-unet", module=MODULE, make_job="tests.tune.crashing:crash_once_job",
                            make_probe_module="microforge.tune.unet:unet_probe_module",
                            presets=("tiny", "small", "standard"), metric="val_dice", mode="max",
                            data_parameters=("train_samples", "val_samples", "seed"))
