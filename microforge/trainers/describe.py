"""``microforge train <workload> --describe``: parameters of each artifact component for every
model preset of a workload at the options given (e.g. FastGAN's sizes at one resolution)."""

from __future__ import annotations

from typing import Any, Mapping

from .workload import Workload

__all__ = ["describe_presets", "parameter_counts"]


def parameter_counts(workload: Workload, options: Mapping[str, Any]) -> dict[str, int]:
    """Parameters of each component the module exports (``model`` when it exports none).

    Raises:
        ConfigError: options the workload or its module rejects.
    """
    module = workload.job(options, epochs=1, runs_dir=".").build_module()
    export = getattr(module, "export_components", None)
    components = export() if export is not None else {"model": module}
    return {name: sum(p.numel() for p in part.parameters()) for name, part in components.items()}


def describe_presets(workload: Workload, given: Mapping[str, Any]) -> str:
    """A table of :func:`parameter_counts` for every preset, the chosen one marked ``*``."""
    chosen = workload.load_options(dict(given))
    preset_key, size_key = workload.preset_option, workload.size_option
    rows = []
    for preset in workload.presets:
        counts = parameter_counts(workload, {**chosen.to_json_dict(), preset_key: preset})
        rows.append((preset, counts))
    names = list(rows[0][1])
    size = getattr(chosen, size_key)
    lines = [f"{workload.name}: parameters per component at {size_key} {size}",
             "  " + f"{preset_key:<12}" + "".join(f"{n:>16}" for n in names)]
    for preset, counts in rows:
        mark = "*" if preset == getattr(chosen, preset_key) else " "
        lines.append(f"{mark} {preset:<12}" + "".join(f"{counts[n] / 1e6:>15.2f}M" for n in names))
    return "\n".join(lines)
