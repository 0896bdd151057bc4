"""Local Stable Diffusion pipeline directories: checking one, fingerprinting it, loading its parts,
and encoding prompts with its tokenizer and text encoder.

microforge never downloads a model: ``--pretrained`` is a directory that diffusers'
``save_pretrained`` wrote (``model_index.json`` and the ``unet``, ``vae``, ``text_encoder``,
``tokenizer`` and ``scheduler`` folders). Plain torch, diffusers and transformers: nothing here
imports Ray or Lightning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from microforge.platform.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["PIPELINE_PARTS", "PipelineParts", "check_pipeline_dir", "class_prompt_of", "encode_prompts",
           "load_pipeline_parts", "pipeline_fingerprint", "quiet_hf", "save_pipeline", "vae_scale_factor"]

# The folders a text-to-image Stable Diffusion pipeline needs (safety checker and feature extractor are optional).
PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Weights files larger than this are fingerprinted by size and their first and last block (hashing
# gigabytes on every run would cost more than the cache saves).
_FULL_HASH_BYTES = 64 << 20
_EDGE_BYTES = 8 << 20


def quiet_hf() -> None:
    """Silence diffusers' and transformers' progress bars and advice (e.g. "install accelerate"):
    their output would flood the logs Ray forwards from every worker."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub, whatever a config names
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def check_pipeline_dir(path: str | Path | None, flag: str = "--pretrained") -> Path:
    """The absolute path of a local Stable Diffusion pipeline directory.

    Raises:
        ConfigError: no path, a path that does not exist (a hub id is named as such: nothing is
            downloaded), or a directory that is not a diffusers text-to-image pipeline.
    """
    if path is None or not str(path).strip():
        raise ConfigError(f"{flag} is required: a local Stable Diffusion pipeline directory "
                          "(written by diffusers' save_pretrained)")
    text = str(path)
    where = Path(text).expanduser().absolute()
    if not where.exists():
        if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
            raise ConfigError(f"{flag} {text} looks like a hub id: microforge never downloads models; download "
                              "the pipeline first and pass its local directory")
        raise ConfigError(f"{flag} {text} does not exist (a local Stable Diffusion pipeline directory)")
    if not where.is_dir():
        raise ConfigError(f"{flag} {text} is not a directory (a local Stable Diffusion pipeline directory)")
    index = where / "model_index.json"
    try:
        spec = json.loads(index.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{flag} {text} is not a diffusers pipeline directory: it has no model_index.json") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag} {text}: model_index.json is unreadable ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{flag} {text}: model_index.json is not a JSON object")
    missing = [p for p in PIPELINE_PARTS if not isinstance(spec.get(p), list) or spec[p][0] is None
               or not (where / p).is_dir()]
    if missing:
        raise ConfigError(f"{flag} {text} is not a Stable Diffusion pipeline ({spec.get('_class_name', 'unknown')}): "
                          f"missing {', '.join(missing)}")
    return where


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}:".encode())
    with open(path, "rb") as fh:
        if size <= _FULL_HASH_BYTES:
            digest.update(fh.read())
        else:
            digest.update(fh.read(_EDGE_BYTES))
            fh.seek(size - _EDGE_BYTES)
            digest.update(fh.read())
    return digest.hexdigest()


def pipeline_fingerprint(directory: str | Path) -> str:
    """A SHA-256 of what a pipeline directory generates with: ``model_index.json`` and the files of
    its :data:`PIPELINE_PARTS` folders (large weights by size and edges), not hidden files such as
    a download tool's cache. It keys the class images drawn from the pipeline."""
    root = Path(directory)
    files = [root / "model_index.json", *(p for part in PIPELINE_PARTS for p in (root / part).rglob("*"))]
    digest = hashlib.sha256()
    hidden = [p for p in files if any(n.startswith(".") for n in p.relative_to(root).parts)]
    for path in sorted(p for p in files if p.is_file() and p not in hidden):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + _file_digest(path).encode())
    return digest.hexdigest()


def class_prompt_of(template: str) -> str:
    """The class prompt of DreamBooth's prior preservation from the one prompt template: the text
    before ``{phase}`` without its trailing "at phase" (``... a human embryo at phase {phase}`` ->
    ``... a human embryo``), so instance and class prompts cannot drift apart."""
    head = template.split("{phase}")[0]
    head = re.sub(r"(\s+(at|in|of))?\s+(phase|stage)\s*$", "", head).rstrip(" ,:;-")
    if not head.strip():
        raise ConfigError(f"prompt template '{template}' has no text before {{phase}} to use as the class prompt; "
                          "give --class-prompt")
    return head


@dataclass
class PipelineParts:
    """The parts of a Stable Diffusion pipeline that training and sampling use."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]

    def modules(self) -> list[Any]:
        return [self.unet, self.vae, self.text_encoder]


def load_pipeline_parts(directory: str | Path) -> PipelineParts:
    """Load a checked pipeline directory's UNet, VAE, text encoder, tokenizer and scheduler config
    (on the CPU, eval mode, float32)."""
    quiet_hf()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = str(Path(directory))  # a str: diffusers records it in the config, which must stay JSON
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True).eval()
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True).eval()
    text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
    scheduler = json.loads((Path(directory) / "scheduler" / "scheduler_config.json").read_text())
    for module in (unet, vae, text_encoder):
        module.float()
    return PipelineParts(unet, vae, text_encoder, tokenizer, scheduler)


def save_pipeline(parts: PipelineParts, directory: str | Path) -> None:
    """Write ``parts`` as a ``StableDiffusionPipeline`` directory that diffusers alone loads."""
    quiet_hf()  # first: importing the pipeline class already logs advice
    import diffusers
    from diffusers import StableDiffusionPipeline

    config = dict(parts.scheduler_config)
    scheduler = getattr(diffusers, config.get("_class_name", "DDPMScheduler")).from_config(config)
    StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(str(directory))


def vae_scale_factor(vae: Any) -> int:
    """Pixels per latent pixel (8 for Stable Diffusion's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode_prompts(tokenizer: Any, text_encoder: Any, prompts: Sequence[str]) -> "torch.Tensor":
    """``(B, tokens, width)`` text-encoder states of ``prompts``, padded to the tokenizer's length
    (what diffusers' ``StableDiffusionPipeline.encode_prompt`` computes)."""
    device = next(text_encoder.parameters()).device
    # A tokenizer saved without its config reports a length of 1e30: the encoder's positions bound it.
    length = min(int(tokenizer.model_max_length), int(text_encoder.config.max_position_embeddings))
    tokens = tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    mask = tokens.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
