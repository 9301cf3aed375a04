"""Turn ``model.device`` (auto|cpu|cuda|cuda:N) into a torch device, or a ConfigError."""

from __future__ import annotations

import torch

from streamer.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("model.device", f"{name!r} requested but CUDA is not available")
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            "model.device", f"{name!r}: only {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev
