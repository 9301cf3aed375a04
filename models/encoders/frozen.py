"""Frozen backbones: pretrained feature extractors that are used, never trained nor saved.

A :class:`FrozenEncoder` is a backbone (a package's pretrained network, or a user's ONNX
file) and a small trainable projection to ``d_model``. The backbone is held outside the
module tree, so ``state_dict()`` (the checkpoint's ``model.safetensors``), ``parameters()``
(the optimizer) and ``train()`` see only the projection; moving the encoder to a device
moves the backbone too. What the checkpoint keeps of the backbone is its
:class:`Provenance` (``architecture.encoders.M.weights`` in ``config.json``): the package
and its version, the weight file and its sha256, the licence; loading compares it with
what is installed (:func:`check_provenance`) and refuses a mismatch in one line.

A backbone takes the modality's inputs (see :mod:`models.encoders.registry`) and returns
float features ``[N, dim]``; items of a batch are independent, so the incremental cache
and batching across streams work unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.tags import ItemTags


class ProvenanceError(ValueError):
    """A frozen backbone is missing, or not the one a checkpoint was trained with."""


@dataclass(frozen=True)
class Provenance:
    """Where a backbone's weights come from."""

    name: str  # the encoder's registered name
    file: str  # the weight file: a path inside the package, or absolute for a user's
    sha256: str  # of that file
    licence: str
    package: str | None = None  # the distribution that ships it (None: a user's file)
    version: str | None = None  # the package's version

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        def opt(key: str) -> str | None:
            v = d.get(key)
            return None if v is None else str(v)

        try:
            return cls(
                name=str(d["name"]), file=str(d["file"]), sha256=str(d["sha256"]),
                licence=str(d.get("licence", "")), package=opt("package"), version=opt("version"),
            )  # fmt: skip
        except KeyError as e:
            raise ProvenanceError(f"the weights record {dict(d)!r} lacks {e}") from e


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_provenance(recorded: Provenance, installed: Provenance) -> None:
    """One line naming what differs between a checkpoint's backbone and the installed one."""
    where = f"{recorded.package} " if recorded.package else ""
    if recorded.package != installed.package or recorded.version != installed.version:
        raise ProvenanceError(
            f"encoder {recorded.name!r} was trained with {where}{recorded.version or ''} "
            f"but {installed.package or 'a file'} {installed.version or ''} is installed".replace(
                "  ", " "
            )
        )
    if recorded.sha256 != installed.sha256:
        raise ProvenanceError(
            f"encoder {recorded.name!r}: {installed.file} has sha256 {installed.sha256[:12]}, "
            f"the checkpoint was trained with {recorded.sha256[:12]}"
        )


class FrozenEncoder(nn.Module):
    """``backbone`` (frozen, outside the state dict) then a trainable projection:
    ``LayerNorm(dim) -> Linear(dim, d_model)``."""

    _backbone: Callable[..., torch.Tensor]
    _tagger: Callable[..., list[ItemTags]] | None

    def __init__(
        self,
        backbone: Callable[..., torch.Tensor],
        *,
        dim: int,
        d_model: int,
        provenance: Provenance,
        tagger: Callable[..., list[ItemTags]] | None = None,
    ) -> None:
        """``tagger``: the backbone's own head, its features ``[N, dim]`` -> a few ``(tag,
        score)`` per item (:mod:`models.tags`), or None. It takes the features, not the
        inputs, so tagging costs no second pass of the backbone (:meth:`encode`)."""
        super().__init__()
        # not an attribute nn.Module tracks: no state_dict, no parameters, no train()
        object.__setattr__(self, "_backbone", backbone)
        if isinstance(backbone, nn.Module):
            backbone.requires_grad_(False).eval()
        self.dim = dim
        self.provenance = provenance
        object.__setattr__(self, "_tagger", tagger)
        self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, d_model))

    @property
    def backbone(self) -> Callable[..., torch.Tensor]:
        return self._backbone

    @property
    def tagger(self) -> Callable[..., list[ItemTags]] | None:
        return self._tagger

    def features(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The backbone's features ``[N, dim]`` (no gradient, float32)."""
        with torch.no_grad():
            out = self.backbone(*inputs)
        return out.float()

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[N, dim]`` (any float dtype) -> ``[N, d_model]``: the trainable
        part alone, for features computed once (:mod:`streamer.training.embedding`)."""
        out: torch.Tensor = self.proj(features.float())
        return out

    def encode(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[ItemTags] | None]:
        """The embeddings ``[N, d_model]`` and, with a tagger, each item's tags, from one
        pass of the backbone."""
        feats = self.features(*inputs)
        tags = None if self._tagger is None else self._tagger(feats)
        return self.project(feats), tags

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(*inputs))

    def _apply(self, fn: Any, recurse: bool = True) -> FrozenEncoder:
        backbone = self.backbone
        if isinstance(backbone, nn.Module):  # .to(device), .float(), ...: the backbone too
            backbone._apply(fn, recurse)  # type: ignore[no-untyped-call]
            backbone.eval()
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self
