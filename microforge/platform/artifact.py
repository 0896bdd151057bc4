"""Model artifacts: ``model.safetensors`` + ``model.json``, self-describing and verified on load.

``model.json`` records how to rebuild the module (``architecture: {name, config}``, resolved by
the trainers' registry), how to preprocess inputs, the metrics it reached and where it came from
(dataset, config, run). Serve and eval load models only through :func:`read_artifact`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import MicroforgeError
from .storage import atomic_replace_dir

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"


class ArtifactError(MicroforgeError):
    """A model artifact directory is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class ModelCard:
    """The contents of ``model.json``."""

    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any]
    provenance: dict[str, Any]

    @property
    def name(self) -> str:
        return self.architecture["name"]


def save_artifact(directory: str | Path, state_dict: Mapping[str, Any], *, architecture: Mapping[str, Any],
                  preprocessing: Mapping[str, Any], metrics: Mapping[str, Any],
                  provenance: Mapping[str, Any]) -> Path:
    """Write an artifact directory atomically (a temp directory renamed into place).

    ``architecture`` must hold ``name`` and ``config`` (the JSON-serialisable constructor
    arguments). An existing directory at ``directory`` is replaced only once the new one is complete.
    """
    from safetensors.torch import save_file

    if "name" not in architecture or "config" not in architecture:
        raise ValueError("architecture needs 'name' and 'config'")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        card = {
            "format_version": FORMAT_VERSION,
            "architecture": dict(architecture),
            "preprocessing": dict(preprocessing),
            "metrics": dict(metrics),
            "provenance": dict(provenance),
            "weights_sha256": _file_sha256(tmp / WEIGHTS_FILE),
        }
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True, default=float) + "\n")

    return atomic_replace_dir(directory, fill)


def read_artifact(directory: str | Path) -> tuple[ModelCard, dict[str, Any]]:
    """Read and verify an artifact: its card and its state dict (CPU tensors).

    Raises:
        ArtifactError: the directory or a file is missing, the card is invalid, or the weights
            do not match the checksum in the card.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"model artifact not found: {directory} is not a directory")
    for name in (CARD_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise ArtifactError(f"model artifact {directory} is incomplete: {name} is missing")
    try:
        card = json.loads((directory / CARD_FILE).read_text())
        arch = card["architecture"]
        if not isinstance(arch.get("name"), str) or not isinstance(arch.get("config"), dict):
            raise KeyError("architecture.name/config")
        model_card = ModelCard(arch, card.get("preprocessing", {}), card.get("metrics", {}), card.get("provenance", {}))
        expected = card["weights_sha256"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"model artifact {directory}: {CARD_FILE} is invalid ({exc})") from None
    if card.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"model artifact {directory}: unsupported format_version {card.get('format_version')}")
    if _file_sha256(directory / WEIGHTS_FILE) != expected:
        raise ArtifactError(f"model artifact {directory}: {WEIGHTS_FILE} is corrupt (checksum mismatch)")
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"model artifact {directory}: cannot read {WEIGHTS_FILE} ({exc})") from None
    return model_card, state


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
