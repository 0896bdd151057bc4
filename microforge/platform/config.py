"""Config base: pydantic v2 models loaded from dicts, JSON or YAML files.

Unknown keys are an error that names the key and suggests the closest valid one; every
validation failure becomes a :class:`ConfigError` with a one-line, actionable message.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Mapping, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from .errors import ConfigError

T = TypeVar("T", bound="ConfigModel")


def suggest(name: str, valid: list[str] | tuple[str, ...]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def read_structured_file(path: str | Path) -> Any:
    """Read a JSON or YAML file (chosen by suffix) into Python objects."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigError(f"cannot parse {path}: {exc}") from None


class ConfigModel(BaseModel):
    """Base of every microforge config: strict keys, validated assignment, JSON round-trip."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            valid = list(cls.model_fields)
            aliases = [f.alias for f in cls.model_fields.values() if f.alias]
            for key in data:
                if key not in valid and key not in aliases:
                    raise ValueError(f"unknown key '{key}'{suggest(str(key), valid)}")
        return data

    @classmethod
    def load(cls: type[T], source: "T | Mapping[str, Any] | str | Path") -> T:
        """Build the config from an instance, a mapping, or a JSON/YAML file path.

        Raises:
            ConfigError: the file is missing or unparsable, or a value is invalid.
        """
        if isinstance(source, cls):
            return source
        data = source if isinstance(source, Mapping) else read_structured_file(source)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping of keys to values, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(cls.__name__, exc)) from None

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return json.loads(self.model_dump_json())

    def config_hash(self) -> str:
        """Stable SHA-256 of the canonical JSON of this config (key order independent)."""
        canonical = json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def format_validation_error(model_name: str, exc: ValidationError) -> str:
    """One line per problem, each naming the field: ``Model.field: message``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{model_name}.{loc}: {msg}" if loc else f"{model_name}: {msg}")
    return "; ".join(parts)


def _ordered(value: tuple) -> tuple:
    if value[0] > value[-1] if len(value) == 2 else value[0] > min(value[1:]):
        raise ValueError(f"range lo > hi: {list(value)}")
    return value


# A closed interval (lo, hi) with lo <= hi, written as a 2-element list in JSON.
FloatRange = Annotated[tuple[float, float], AfterValidator(_ordered)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]
