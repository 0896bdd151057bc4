"""Config models, the Ray runtime, storage paths, errors and the CLI root."""

from .config import ConfigModel, FloatRange, IntRange, suggest
from .errors import ConfigError, DatasetError, MicroforgeError
from .runtime import ray_runtime
from .storage import atomic_write_bytes, atomic_write_text, ensure_writable_dir, state_dir

__all__ = [
    "ConfigError",
    "ConfigModel",
    "DatasetError",
    "FloatRange",
    "IntRange",
    "MicroforgeError",
    "atomic_write_bytes",
    "atomic_write_text",
    "ensure_writable_dir",
    "ray_runtime",
    "state_dir",
    "suggest",
]
