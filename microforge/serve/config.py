"""The serve configuration: where data and models live, limits, and each deployment's scaling.

Loaded from a YAML/JSON file (``microforge serve up --config serve.yaml``) or built in code; every
value is range-checked and unknown keys are errors that name the key. Example::

    host: 127.0.0.1
    port: 8000
    cors_origins: []                 # CORS stays off unless origins are listed
    limits: {max_upload_bytes: 33554432, max_image_side: 8192}
    deployments:
      SegmentationModel:
        autoscaling: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 8}
        ray_actor_options: {num_cpus: 1, num_gpus: 0}
        max_batch_size: 8
        batch_wait_timeout_s: 0.01
      GeneratorModel:
        num_replicas: 1
        max_batch_size: 16           # counts images (seeds), not requests; diffusion: whole chunks of 8
      ColorizerModel:
        num_replicas: 1
        max_batch_size: 8            # counts images (one per upload)
      CrystalRenderer:
        num_replicas: 2
    default_models: {generate: gans/latest}   # per Serve task; default: the newest artifact

``deployments`` has one key per Serve task's deployment (see :mod:`microforge.serve.tasks`)
plus ``Ingress``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from microforge.platform.config import ConfigModel
from microforge.platform.errors import ConfigError
from microforge.platform.storage import state_dir

from .tasks import DEPLOYMENT_NAMES, TASKS

TOKEN_ENV = "MICROFORGE_API_TOKEN"
DEFAULT_MAX_BATCH_IMAGES = 10_000
MODEL_TASKS = tuple(task.name for task in TASKS if task.role)


class AutoscalingSettings(ConfigModel):
    """Ray Serve autoscaling of one deployment."""

    min_replicas: int = Field(1, ge=0, le=1024, description="Replicas kept when idle.")
    max_replicas: int = Field(2, ge=1, le=1024, description="Upper bound on replicas.")
    target_ongoing_requests: float = Field(
        4.0, gt=0, le=10_000, description="Ongoing requests per replica the autoscaler aims for.")
    upscale_delay_s: float = Field(5.0, ge=0, le=3600, description="Load must persist this long to add replicas.")
    downscale_delay_s: float = Field(30.0, ge=0, le=3600, description="Idle time before replicas are removed.")

    @model_validator(mode="after")
    def _ordered(self) -> "AutoscalingSettings":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class ActorOptions(ConfigModel):
    """Resources each replica reserves (logical Ray resources; fractions allowed)."""

    num_cpus: float = Field(0.1, ge=0, le=512)
    num_gpus: float = Field(0.0, ge=0, le=64)


class DeploymentSettings(ConfigModel):
    """Scaling of one deployment: a fixed ``num_replicas`` or ``autoscaling``, not both."""

    num_replicas: Optional[int] = Field(None, ge=1, le=1024, description="Fixed replica count.")
    autoscaling: Optional[AutoscalingSettings] = Field(None, description="Autoscaling instead of a fixed count.")
    ray_actor_options: ActorOptions = Field(default_factory=ActorOptions)
    max_ongoing_requests: int = Field(32, ge=1, le=100_000, description="Requests one replica accepts at once.")
    # Dynamic batching: applies to the batching deployments (SegmentationModel, GeneratorModel,
    # ColorizerModel).
    max_batch_size: int = Field(8, ge=1, le=1024, description="Largest batch @serve.batch assembles.")
    batch_wait_timeout_s: float = Field(0.02, ge=0, le=10, description="Longest wait for a batch to fill.")

    @model_validator(mode="after")
    def _consistent(self) -> "DeploymentSettings":
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("set num_replicas or autoscaling, not both")
        if self.max_batch_size > self.max_ongoing_requests:
            # A replica never holds more than max_ongoing_requests, so larger batches could not form.
            raise ValueError(f"max_batch_size ({self.max_batch_size}) exceeds max_ongoing_requests "
                             f"({self.max_ongoing_requests}); raise max_ongoing_requests")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Deployment.options``."""
        options: dict[str, Any] = {
            "ray_actor_options": self.ray_actor_options.to_json_dict(),
            "max_ongoing_requests": self.max_ongoing_requests,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.to_json_dict()
        else:
            options["num_replicas"] = self.num_replicas or 1
        return options


def _default_deployments() -> dict[str, DeploymentSettings]:
    return {name: DeploymentSettings() for name in DEPLOYMENT_NAMES}


class Limits(ConfigModel):
    """Caps on what one request may ask for."""

    max_upload_bytes: int = Field(32 << 20, ge=1024, le=1 << 34, description="Largest uploaded file.")
    max_request_bytes: int = Field(512 << 20, ge=1024, le=1 << 36,
                                   description="Largest request body (a folder upload holds many files).")
    max_folder_files: int = Field(5000, ge=1, le=1_000_000, description="Most files in one folder upload.")
    max_image_side: int = Field(8192, ge=16, le=65536, description="Longest side of an accepted image (px).")
    max_image_pixels: int = Field(40_000_000, ge=256, le=1 << 32, description="Most pixels of an accepted image.")
    max_preview_pixels: int = Field(4096 * 4096, ge=256, le=1 << 30,
                                    description="Most pixels of one synthesis preview (width x height).")
    max_bulk_rows: int = Field(32, ge=1, le=1024, description="Most rows of one /synth_preview_bulk.")
    max_batch_images: int = Field(DEFAULT_MAX_BATCH_IMAGES, ge=1, le=100_000_000,
                                  description=f"Most images of one /synth_batch; above {DEFAULT_MAX_BATCH_IMAGES} "
                                              f"only with an API token (${TOKEN_ENV}).")
    max_generate_images: int = Field(64, ge=1, le=100_000, description="Most images (seeds) of one /generate.")
    max_generate_bytes: int = Field(128 << 20, ge=1024, le=1 << 36,
                                    description="Most raw image bytes (images x H x W x channels x bytes per "
                                                "sample) of one /generate (413 beyond): bounds a response.")
    max_generate_steps: int = Field(250, ge=1, le=1000,
                                    description="Most sampling steps of one diffusion /generate (422 beyond; "
                                                "`microforge generate diffusion` takes up to 1000).")
    max_infer_pixels: int = Field(2048 * 2048, ge=256, le=1 << 32,
                                  description="Most pixels of one image sent to a model (/predict, /inference, "
                                              "/stream_frame; 413 beyond): bounds a replica's memory.")
    request_timeout_s: float = Field(120.0, gt=0, le=86_400,
                                     description="Deadline of one call to a model or renderer replica (504 beyond).")
    job_timeout_s: float = Field(6 * 3600.0, gt=0, le=30 * 86_400,
                                 description="A background job (/synth_batch, time-lapse run) still running after "
                                             "this long is cancelled.")
    max_live_clients: int = Field(8, ge=1, le=10_000,
                                  description="WebSocket clients of /ws/live per ingress replica (closed with code "
                                              "1013 beyond); keep well below the Ingress max_ongoing_requests, "
                                              "since each open socket holds one of its request slots.")
    live_idle_timeout_s: float = Field(300.0, gt=0, le=86_400,
                                       description="A /ws/live client that sends nothing this long is closed "
                                                   "(clients keep alive by sending any text).")


class ServeConfig(ConfigModel):
    """Everything ``microforge serve up`` and the application builder need."""

    host: str = Field("127.0.0.1", description="Interface to bind; 127.0.0.1 keeps the API local.")
    port: int = Field(8000, ge=1, le=65535)
    data_root: Optional[str] = Field(None, description="Uploads, presets, datasets, outputs "
                                                       "(default: <state dir>/serve/data).")
    models_dir: Optional[str] = Field(None, description="Model artifacts and detector plugins, the only place "
                                                        "models load from (default: <state dir>/models).")
    segmentation_model: Optional[str] = Field(None, description="Artifact folder (inside models_dir) served by "
                                                                "/predict and /demo; default: the newest U-Net "
                                                                "(the same as default_models.segment).")
    default_models: dict[str, str] = Field(default_factory=dict,
                                           description="Model id (inside models_dir) per Serve task served when "
                                                       "none is selected; default: the task's newest artifact.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty = CORS off.")
    allowed_hosts: list[str] = Field(default_factory=list,
                                     description="Host names the server answers to besides the bound address and "
                                                 "localhost (a DNS-rebinding guard); '*' accepts any.")
    state_actor: str = Field("microforge-serve-state", pattern=r"^[A-Za-z0-9_.-]{1,100}$",
                             description="Name of the detached Ray actor holding jobs and live state.")
    synth_workers: Optional[int] = Field(None, ge=1, le=4096, description="Parallel render tasks of /synth_batch.")
    timelapse_workers: int = Field(1, ge=1, le=256, description="Ray Data actors analysing time-lapse frames.")
    limits: Limits = Field(default_factory=Limits)
    deployments: dict[str, DeploymentSettings] = Field(default_factory=_default_deployments)
    api_token: Optional[str] = Field(None, exclude=True, repr=False,
                                     description=f"Bearer token for mutating endpoints (default: ${TOKEN_ENV}).")

    @field_validator("deployments", mode="before")
    @classmethod
    def _known_deployments(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = [k for k in value if k not in DEPLOYMENT_NAMES]
            if unknown:
                raise ValueError(f"unknown deployment '{unknown[0]}'; valid: {', '.join(DEPLOYMENT_NAMES)}")
            return {name: value.get(name, {}) for name in DEPLOYMENT_NAMES}
        return value

    @field_validator("default_models")
    @classmethod
    def _known_tasks(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in value if k not in MODEL_TASKS]
        if unknown:
            raise ValueError(f"unknown serve task '{unknown[0]}'; valid: {', '.join(MODEL_TASKS)}")
        return value

    @model_validator(mode="after")
    def _segmentation_default(self) -> "ServeConfig":
        if self.segmentation_model and "segment" not in self.default_models:
            self.default_models["segment"] = self.segmentation_model
        return self

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin '{origin}' must start with http:// or https:// (or be '*')")
        return value

    def resolved(self) -> "ServeConfig":
        """A copy with absolute, existing, non-overlapping directories and the token from the env."""
        data_root = Path(self.data_root or state_dir() / "serve" / "data").expanduser().resolve()
        models_dir = Path(self.models_dir or state_dir() / "models").expanduser().resolve()
        if data_root == models_dir or data_root in models_dir.parents or models_dir in data_root.parents:
            # Uploads land in the data root; plugins run from the models dir: they must never overlap,
            # or an upload could become a plugin.
            raise ConfigError(f"data_root ({data_root}) and models_dir ({models_dir}) must not contain each other")
        for path in (data_root, models_dir):
            path.mkdir(parents=True, exist_ok=True)
        token = self.api_token if self.api_token is not None else os.environ.get(TOKEN_ENV) or None
        if self.limits.max_batch_images > DEFAULT_MAX_BATCH_IMAGES and not token:
            raise ConfigError(f"limits.max_batch_images {self.limits.max_batch_images} exceeds "
                              f"{DEFAULT_MAX_BATCH_IMAGES}: allowed only with an API token (set {TOKEN_ENV}); "
                              "`microforge synth` renders datasets of any size from the command line")
        return self.model_copy(update={"data_root": str(data_root), "models_dir": str(models_dir),
                                       "api_token": token})

    def settings(self) -> dict[str, Any]:
        """What every deployment receives: the resolved config as a plain dict, token included."""
        resolved = self.resolved()
        data = resolved.to_json_dict()
        data["api_token"] = resolved.api_token
        return data

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "ServeConfig":
        return cls.load(settings)


def load_serve_config(path: str | Path | None = None, **overrides: Any) -> ServeConfig:
    """The config from ``path`` (YAML/JSON; none = defaults) with non-None ``overrides`` applied.

    Raises:
        ConfigError: unreadable file, unknown key or out-of-range value.
    """
    base = ServeConfig.load(path).to_json_dict() if path else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return ServeConfig.load(base)
