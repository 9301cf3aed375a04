"""Load the checkpoint a config names (or the shipped one) and check it fits the windows."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.checkpoint import CheckpointFormatError, default_checkpoint_dir, load_checkpoint
from models.fusion import FusionModel
from models.spec import ModelSpec
from streamer.config import ModelConfig, WindowConfig
from streamer.errors import CheckpointError, ConfigError
from streamer.inference.device import resolve_device
from streamer.predictions import ModelId


@dataclass(frozen=True)
class LoadedModel:
    model: FusionModel
    spec: ModelSpec
    device: torch.device
    id: ModelId
    trained: bool


def _multiple(value: float, step: float) -> bool:
    q = value / step
    return abs(q - round(q)) < 1e-9


def check_window(window: WindowConfig, spec: ModelSpec) -> None:
    """Windows must cut the model's slots evenly: hop a multiple of its step."""
    if not _multiple(window.hop, spec.step):
        raise ConfigError(
            "window.hop", f"{window.hop} s is not a multiple of the model's step ({spec.step} s)"
        )
    slots = round(window.length * spec.fps)
    if slots > spec.max_positions:
        raise ConfigError(
            "window.length",
            f"{window.length} s needs {slots} slots; the model has {spec.max_positions}",
        )


def load_model(cfg: ModelConfig, window: WindowConfig) -> LoadedModel:
    device = resolve_device(cfg.device)
    directory = cfg.checkpoint or default_checkpoint_dir()
    try:
        model, info = load_checkpoint(directory, device=device)
    except CheckpointFormatError as e:
        raise CheckpointError(f"model.checkpoint: {e}") from None
    check_window(window, info.spec)
    model.eval()
    mid = ModelId(name=info.name, version=info.version, labels=tuple(info.spec.labels))
    return LoadedModel(model, info.spec, device, mid, info.trained)
