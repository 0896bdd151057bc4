"""A delineation workload whose training crashes once, at the start of its second epoch (for the
restore test).

Imported by Ray workers through its import path; the driver's working directory (the repository
root under ``python -m pytest``) is on their ``sys.path``. The test registers :data:`CRASH_ONCE`
in its own process only; the search hands the object to its trials.
"""

from pathlib import Path

from pydantic import Field

from microforge.trainers.unet.lightning import UNetModule
from microforge.trainers.unet.workload import DELINEATION, DelineationOptions
from microforge.trainers.workload import Workload


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


class CrashOnceOptions(DelineationOptions):
    """Delineation options plus the marker file (the delineation plan passes it to the module)."""

    crash_marker: str = Field("", description="file whose absence makes epoch 2 crash (and creates it)")


CRASH_ONCE = Workload(
    name="crash-once",
    description="delineation whose second epoch crashes once",
    module="tests.tune.crashing:CrashOnceUNet",
    options="tests.tune.crashing:CrashOnceOptions",
    plan=DELINEATION.plan,
    presets=DELINEATION.presets,
    metric=DELINEATION.metric,
    mode=DELINEATION.mode,
    legacy_names=dict(DELINEATION.legacy_names),
)
