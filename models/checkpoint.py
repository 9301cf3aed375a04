"""Checkpoints: a directory of ``model.safetensors`` (weights only) and ``config.json``.

Loading goes through safetensors only (nothing is unpickled) and checks every tensor's name
and shape against the architecture the spec describes; any problem is a one-line
``CheckpointFormatError``. ``config.json``::

    {"format": "streamer.checkpoint/1", "name": ..., "spec": ModelSpec.to_dict(),
     "trained": bool, "metrics": {...}, "version": "sha256:<digest of model.safetensors>",
     "architecture": {"class": "models.fusion.FusionModel", "parameters": int,
                      "encoders": {"video": {"name": "builtin", "options": {}}, ...}},
     "preprocessing": {...}, ...extra}

``architecture.class`` must be a known class (:data:`ARCHITECTURES`) and each encoder a
name in :mod:`models.encoders.registry` or ``onnx:<absolute path>``; a checkpoint without
``encoders`` (all written before it existed) uses ``builtin`` for every modality.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.encoders.frozen import FrozenEncoder, Provenance, ProvenanceError, check_provenance
from models.encoders.registry import (
    MODALITIES,
    EncoderChoice,
    UnknownEncoderError,
    check_encoder_name,
    encoder_choices,
    encoder_names,
)
from models.fusion import FusionModel
from models.late_fusion import LateFusionModel
from models.spec import ModelSpec

FORMAT = "streamer.checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_RESERVED = ("format", "name", "spec", "trained", "metrics", "version", "architecture")
FUSION_CLASS = "models.fusion.FusionModel"
LATE_FUSION_CLASS = "models.late_fusion.LateFusionModel"
# architecture.class -> the class it names; every one is built as cls(spec, encoders=...)
ARCHITECTURES: dict[str, type[FusionModel]] = {
    FUSION_CLASS: FusionModel,
    LATE_FUSION_CLASS: LateFusionModel,
}


class CheckpointFormatError(ValueError):
    """A checkpoint directory that cannot be loaded; the message is one line."""


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    name: str
    version: str  # "sha256:<hex>" of model.safetensors
    spec: ModelSpec
    trained: bool
    config: dict[str, Any]  # the raw config.json


def build_model(
    spec: ModelSpec,
    encoders: Mapping[str, str | EncoderChoice] | None = None,
    architecture: str = FUSION_CLASS,
) -> FusionModel:
    """A new (untrained) model of ``architecture`` with the named encoders (``builtin``
    where not given): what loading a checkpoint and training both build. ``ValueError``
    (one line) for an unknown class or encoder."""
    cls = ARCHITECTURES.get(architecture)
    if cls is None:
        raise ValueError(
            f"unknown architecture class {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        )
    return cls(spec, encoders=encoders)


def default_checkpoint_dir() -> Path:
    """The shipped reference checkpoint, ``models/reference/``."""
    return Path(__file__).resolve().parent / "reference"


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(
    model: FusionModel,
    directory: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    trained: bool = False,
) -> CheckpointInfo:
    """Write ``model`` to ``directory`` (created if needed); ``extra`` adds top-level keys."""
    clash = sorted(set(extra or {}) & set(_RESERVED))
    if clash:
        raise ValueError(f"extra may not set reserved config keys: {clash}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / WEIGHTS), metadata={"format": FORMAT})
    spec = model.spec
    config: dict[str, Any] = {
        "format": FORMAT,
        "name": spec.name,
        "spec": spec.to_dict(),
        "trained": trained,
        "metrics": dict(metrics or {}),
        "version": _digest(out / WEIGHTS),
        "architecture": {
            "class": _class_name(model),
            "parameters": sum(p.numel() for p in model.parameters()),
            "encoders": {m: _encoder_record(model, m, c) for m, c in model.encoder_choices.items()},
        },
        "preprocessing": {
            "video": f"RGB uint8 [{spec.image_size}, {spec.image_size}, 3], {spec.fps} fps",
            "audio": (
                f"mono float32 at {spec.audio_rate} Hz, {spec.segment_samples}-sample "
                f"segments, log-mel {spec.n_mels} bands, n_fft 400, hop 160"
            ),
            "text": f"UTF-8 bytes + 1, truncated to {spec.text_max_bytes} bytes",
        },
        **(extra or {}),
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    return CheckpointInfo(spec.name, config["version"], spec, trained, config)


def _encoder_record(model: FusionModel, modality: str, choice: EncoderChoice) -> dict[str, Any]:
    """The encoder's name and options; for a frozen backbone (not in the weights file)
    also where its weights come from, which loading checks."""
    record = choice.to_dict()
    enc = model.encoder(modality)
    if isinstance(enc, FrozenEncoder):
        record["weights"] = enc.provenance.to_dict()
    return record


def _check_backbones(model: FusionModel, config: dict[str, Any], where: Path) -> None:
    """Each frozen backbone is the one the checkpoint recorded (package, version, sha256)."""
    given = config.get("architecture", {}).get("encoders", {})
    for modality in MODALITIES:
        enc = model.encoder(modality)
        if not isinstance(enc, FrozenEncoder):
            continue
        record = given.get(modality, {}).get("weights")
        if not isinstance(record, dict):
            raise CheckpointFormatError(
                f"{where}: architecture.encoders.{modality} names a frozen encoder but "
                "records no weights"
            )
        try:
            check_provenance(Provenance.from_dict(record), enc.provenance)
        except ProvenanceError as e:
            raise CheckpointFormatError(f"{where}: {e}") from e


def _class_name(model: FusionModel) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"cannot save a {type(model).__qualname__}: not in ARCHITECTURES")


def _read_architecture(config: dict[str, Any], where: Path) -> tuple[str, dict[str, EncoderChoice]]:
    """``architecture.class`` and one encoder choice per modality (absent: the defaults)."""
    arch = config.get("architecture", {})
    if not isinstance(arch, dict):
        raise CheckpointFormatError(f"{where}: architecture must be a JSON object")
    cls = arch.get("class", FUSION_CLASS)
    if cls not in ARCHITECTURES:
        raise CheckpointFormatError(
            f"{where}: unknown architecture.class {cls!r} (known: {', '.join(ARCHITECTURES)})"
        )
    given = arch.get("encoders", {})
    if not isinstance(given, dict) or not set(given) <= set(MODALITIES):
        raise CheckpointFormatError(
            f"{where}: architecture.encoders must map {', '.join(MODALITIES)} to encoders"
        )
    choices: dict[str, EncoderChoice] = {}
    for modality, entry in given.items():
        name = entry.get("name") if isinstance(entry, dict) else None
        options = entry.get("options", {}) if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(options, dict):
            raise CheckpointFormatError(
                f"{where}: architecture.encoders.{modality} must be "
                '{"name": str, "options": {...}}'
            )
        try:
            check_encoder_name(modality, name)
        except UnknownEncoderError as e:
            known = ", ".join(encoder_names(modality))
            raise CheckpointFormatError(
                f"{where}: architecture.encoders.{modality}: {e}"
                if name.startswith("onnx:")
                else f"{where}: unknown {modality} encoder {name!r} in architecture.encoders "
                f"(known: {known}, onnx:/abs/path/model.onnx)"
            ) from e
        choices[modality] = EncoderChoice(name, options)
    return str(cls), encoder_choices(choices)


def _read_config(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise CheckpointFormatError(f"checkpoint directory not found: {directory}")
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise CheckpointFormatError(f"checkpoint {directory} has no {name}")
    try:
        config = json.loads((directory / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointFormatError(f"{directory / CONFIG}: not valid JSON ({msg})") from e
    if not isinstance(config, dict):
        raise CheckpointFormatError(f"{directory / CONFIG}: expected a JSON object")
    if config.get("format") != FORMAT:
        raise CheckpointFormatError(
            f"{directory / CONFIG}: unknown format {config.get('format')!r} (expected {FORMAT})"
        )
    return config


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointFormatError(f"{path}: not a readable safetensors file ({msg})") from e


def load_checkpoint(
    directory: str | Path, device: torch.device | str = "cpu"
) -> tuple[FusionModel, CheckpointInfo]:
    """The model (in eval mode, on ``device``) and its info; ``CheckpointFormatError`` if bad."""
    root = Path(directory)
    config = _read_config(root)
    try:
        spec = ModelSpec.from_dict(dict(config["spec"]))
        name, trained = str(config.get("name", spec.name)), bool(config.get("trained", False))
        version = str(config["version"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointFormatError(f"{root / CONFIG}: bad or missing field ({e})") from e
    actual = _digest(root / WEIGHTS)
    if version != actual:
        raise CheckpointFormatError(
            f"{root / WEIGHTS} does not match config.json (version {version}, file {actual})"
        )
    architecture, encoders = _read_architecture(config, root / CONFIG)
    weights = _read_weights(root / WEIGHTS)
    try:
        model = build_model(spec, encoders, architecture)
    except ProvenanceError as e:  # a backbone's package is missing or broken
        raise CheckpointFormatError(f"{root / CONFIG}: {e}") from e
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointFormatError(f"{root / CONFIG}: spec builds no model ({e})") from e
    _check_backbones(model, config, root / CONFIG)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unknown = sorted(set(weights) - set(expected))
    if missing or unknown:
        raise CheckpointFormatError(
            f"{root / WEIGHTS}: missing tensors {missing[:3]}, unexpected {unknown[:3]}"
        )
    for key, want in expected.items():
        got = weights[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointFormatError(
                f"{root / WEIGHTS}: tensor {key} is {got.dtype} {tuple(got.shape)}, "
                f"expected {want.dtype} {tuple(want.shape)}"
            )
    model.load_state_dict(weights, strict=True)
    model.to(device).eval()
    return model, CheckpointInfo(name, version, spec, trained, config)
