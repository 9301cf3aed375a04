"""Encoders whose backbone runs outside torch, or tags, in an ONNX export.

silero-vad runs on its own onnxruntime session, wordllama in numpy, an ``onnx:`` file on
onnxruntime: none of them can be traced into a graph; efficientnet-lite0 could be, but its
tags are read from its features, which the graph would not give. An ONNX export
(:mod:`models.export`) holds only their projection, ``<modality>_encoder.onnx`` taking
the backbone's ``features`` float32 ``[N, dim]`` to ``embedding`` ``[N, D]``, and records in
``export.json`` under ``backbones`` what the checkpoint records of each (name, options,
the package, its version and the weights' sha256). :class:`models.onnx_runtime.OnnxFusion`
rebuilds those backbones from the installed packages, checked against that record, runs
them and feeds their features to the projection graph; their tags come with them.

TorchScript has no such split: ``--format torchscript`` still refuses them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.encoders.frozen import FrozenEncoder, Provenance, ProvenanceError, check_provenance
from models.encoders.registry import EncoderChoice, build_encoder
from models.fusion import FusionModel
from models.spec import ModelSpec

MODALITIES = ("video", "audio", "text")


class BackboneError(ValueError):
    """A backbone an export records cannot be rebuilt here; the message is one line."""


def outside_torch(model: FusionModel) -> dict[str, FrozenEncoder]:
    """The modalities whose encoder's backbone is not a torch module."""
    out = {}
    for modality in MODALITIES:
        enc = model.encoder(modality)
        if isinstance(enc, FrozenEncoder) and not isinstance(enc.backbone, nn.Module):
            out[modality] = enc
    return out


def hosted(model: FusionModel) -> dict[str, FrozenEncoder]:
    """The backbones an ONNX export leaves to the runtime: those outside torch, and those
    that tag (efficientnet-lite0's ImageNet head reads the backbone's features, which a
    graph that ends in the embedding does not give)."""
    out = outside_torch(model)
    for modality in MODALITIES:
        enc = model.encoder(modality)
        if isinstance(enc, FrozenEncoder) and enc.tagger is not None:
            out[modality] = enc
    return out


class ProjectionGraph(nn.Module):
    """features float32 ``[N, dim]`` -> ``[N, D]``: a frozen encoder's trainable part."""

    def __init__(self, encoder: FrozenEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder.project(features)


def projection_io(enc: FrozenEncoder) -> dict[str, Any]:
    """The projection graph's input and output names, dynamic axes and tracing input."""
    g = torch.Generator().manual_seed(0)
    return {
        "inputs": ("features",),
        "outputs": ("embedding",),
        "dynamic": {"features": {0: "N"}, "embedding": {0: "N"}},
        "example": (torch.randn(3, enc.dim, generator=g),),
    }


def backbone_records(model: FusionModel) -> dict[str, dict[str, Any]]:
    """What ``export.json`` records of each backbone outside torch."""
    return {
        m: {
            "name": model.encoder_choices[m].name,
            "options": dict(model.encoder_choices[m].options),
            "dim": enc.dim,
            "weights": enc.provenance.to_dict(),
        }
        for m, enc in hosted(model).items()
    }


def rebuild_backbones(records: dict[str, Any], spec: ModelSpec) -> dict[str, FrozenEncoder]:
    """Each recorded backbone, built from what is installed and checked against its record
    (its projection is not used: the export's graph has it)."""
    out = {}
    for modality, record in records.items():
        name = record.get("name") if isinstance(record, dict) else None
        if modality not in MODALITIES or not isinstance(name, str):
            raise BackboneError(f"export.json: backbones.{modality} is not a backbone record")
        try:
            enc = build_encoder(modality, EncoderChoice(name, dict(record.get("options", {}))),
                                spec)  # fmt: skip
        except ValueError as e:  # a missing package, an unknown name, a missing onnx: file
            raise BackboneError(f"the export's {modality} backbone: {e}") from None
        if not isinstance(enc, FrozenEncoder):
            raise BackboneError(f"export.json: backbones.{modality}: {name!r} is not frozen")
        try:
            check_provenance(Provenance.from_dict(record["weights"]), enc.provenance)
        except (KeyError, TypeError, ProvenanceError) as e:
            raise BackboneError(f"the export's {modality} backbone: {e}") from None
        out[modality] = enc
    return out
