"""The oriented-box crystal detector (workload ``crystals``): model, targets, data, training, inference."""

from .model import DETECTOR_PRESETS, CrystalDetector, detector_from_preset

__all__ = ["CrystalDetector", "DETECTOR_PRESETS", "detector_from_preset"]
