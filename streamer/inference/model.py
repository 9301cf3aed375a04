"""Load the checkpoint a config names (or the shipped one) and check it fits the windows.

``model.runtime: onnx`` also exports the checkpoint to ONNX (once: into ``model.onnx_dir``,
or a cache directory keyed by the checkpoint version) and runs it with onnxruntime;
``LoadedModel.make_fusion()`` builds the incremental runtime either way.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from models.checkpoint import (
    CheckpointFormatError,
    CheckpointInfo,
    default_checkpoint_dir,
    load_checkpoint,
)
from models.fusion import FusionModel
from models.incremental import CachedFusion, IncrementalFusion
from models.presets import PERCEPTION, perception_model, preset_dir, preset_name
from models.spec import ModelSpec
from streamer.config import ModelConfig, WindowConfig
from streamer.errors import CheckpointError, ConfigError
from streamer.inference.device import resolve_device
from streamer.predictions import ModelId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: FusionModel
    spec: ModelSpec
    device: torch.device
    id: ModelId
    trained: bool
    runtime: str = "torch"  # "torch" or "onnx"
    onnx_dir: Path | None = None  # the ONNX export, when runtime is "onnx"
    precision: str = "fp32"  # resolved: fp32, bf16 or fp16 (torch runtime)
    threads: int = 1  # resolved model.threads: intra-op CPU threads
    cuda_graphs: bool = False  # model.cuda_graphs, on a CUDA device

    def use_threads(self) -> None:
        """Give torch ``threads`` intra-op threads (process-wide; the torch runtime's only)."""
        if self.runtime == "torch":
            torch.set_num_threads(self.threads)

    def make_fusion(self) -> CachedFusion:
        """A fresh incremental runtime (its own cache) for this model and runtime, running on
        ``threads`` intra-op threads (for torch: :meth:`use_threads`)."""
        if self.runtime == "onnx" and self.onnx_dir is not None:
            from models.onnx_runtime import OnnxFusion

            return OnnxFusion(self.onnx_dir, intra_op_threads=self.threads)
        self.use_threads()
        return IncrementalFusion(
            self.model, device=self.device, precision=self.precision, cuda_graphs=self.cuda_graphs
        )


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


def _onnx_export(cfg: ModelConfig, model: FusionModel, name: str, version: str) -> Path:
    """The directory of the checkpoint's ONNX export, exporting it first if needed."""
    from models.onnx_runtime import onnxruntime_available

    if not onnxruntime_available():
        raise ConfigError(
            "model.runtime", "onnx needs the onnxruntime package (pip install onnxruntime)"
        )
    from models.export import ExportError, default_export_dir, export_model, is_exported

    field = "model.onnx_dir"
    directory = cfg.onnx_dir or default_export_dir(version, "onnx")
    if not is_exported(directory, version, "onnx"):
        if importlib.util.find_spec("onnx") is None:
            raise ConfigError(
                "model.runtime", "onnx needs the onnx package to export (pip install onnx)"
            )
        log.info("exporting %s %s to ONNX in %s", name, version[:19], directory)
        try:
            export_model(model, "onnx", directory, name=name, version=version)
        except ExportError as e:
            raise ConfigError(field, str(e)) from None
    try:
        from models.onnx_runtime import OnnxFusion

        OnnxFusion(directory)  # load once now, so a broken export fails at startup
    except ExportError as e:
        raise ConfigError(field, str(e)) from None
    return directory


def _load(cfg: ModelConfig, device: torch.device) -> tuple[FusionModel, CheckpointInfo]:
    """The checkpoint ``model.checkpoint`` names: a directory, or a preset by name."""
    preset = preset_name(cfg.checkpoint)
    if preset == PERCEPTION:
        try:
            model, info = perception_model()
        except ValueError as e:  # a missing package or another version of it
            raise CheckpointError(f"model.checkpoint: perception: {e}") from None
        return model.to(device), info
    directory = preset_dir(preset) if preset else cfg.checkpoint
    try:
        return load_checkpoint(directory or default_checkpoint_dir(), device=device)
    except CheckpointFormatError as e:
        raise CheckpointError(f"model.checkpoint: {e}") from None


def load_model(cfg: ModelConfig, window: WindowConfig) -> LoadedModel:
    device = torch.device("cpu") if cfg.runtime == "onnx" else resolve_device(cfg.device)
    model, info = _load(cfg, device)
    check_window(window, info.spec)
    model.eval()
    readout = str(info.config.get("readout", "classes"))
    mid = ModelId(
        name=info.name, version=info.version, labels=tuple(info.spec.labels), readout=readout
    )
    threads = 1 if cfg.threads == "auto" else cfg.threads
    if cfg.runtime == "onnx":
        onnx_dir = _onnx_export(cfg, model, info.name, info.version)
        return LoadedModel(
            model, info.spec, device, mid, info.trained, "onnx", onnx_dir, threads=threads
        )
    precision = resolve_precision(cfg.precision, device)
    graphs = cfg.cuda_graphs and device.type == "cuda"
    if cfg.cuda_graphs and not graphs:
        log.warning("model.cuda_graphs: no CUDA device (device %s); the fusion step runs eagerly",
                    device)  # fmt: skip
    return LoadedModel(
        model, info.spec, device, mid, info.trained, precision=precision, threads=threads,
        cuda_graphs=graphs,
    )  # fmt: skip


def resolve_precision(name: str, device: torch.device) -> str:
    """``model.precision`` for ``device``: auto is bf16 on a CUDA device that has it, else
    fp16 there, and fp32 on the CPU (where autocast seldom pays); fp16 needs CUDA."""
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("model.precision", f"fp16 needs a CUDA device, not {device}")
    return name
