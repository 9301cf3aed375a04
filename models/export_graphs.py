"""The four graphs an export holds, as torch modules over a :class:`FusionModel`, with
their input and output names, dynamic axes and tracing inputs (the table in
:mod:`models.export`)."""

from __future__ import annotations

import torch
from torch import nn

from models.fusion import Encoded, FusionModel
from models.spec import ModelSpec


class VideoEncoderGraph(nn.Module):
    """uint8 ``[N, H, W, 3]`` -> ``[N, D]``."""

    def __init__(self, model: FusionModel) -> None:
        super().__init__()
        self.encoder = model.video_encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(frames)
        return out


class AudioEncoderGraph(nn.Module):
    """float32 ``[N, S]`` -> ``[N, D]`` (log-mel included)."""

    def __init__(self, model: FusionModel) -> None:
        super().__init__()
        self.encoder = model.audio_encoder

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(wave)
        return out


class TextEncoderGraph(nn.Module):
    """ids int64 ``[N, L]``, lengths int64 ``[N]`` -> ``[N, D]``."""

    def __init__(self, model: FusionModel) -> None:
        super().__init__()
        self.encoder = model.text_encoder

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(ids, lengths)
        return out


class FuseGraph(nn.Module):
    """``FusionModel.fuse`` -> ``(logits [B, C], probs [B, C])``, in eval mode
    (:func:`models.readout.cls_readout`, whose reshapes keep the token axis dynamic).

    With :func:`fuse_graph_inputs`, the one place where the typed :class:`Encoded` meets
    the graph's positional inputs (in ``Encoded``'s field order)."""

    def __init__(self, model: FusionModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        video_emb: torch.Tensor,
        video_mask: torch.Tensor,
        audio_emb: torch.Tensor,
        audio_mask: torch.Tensor,
        text_emb: torch.Tensor,
        text_mask: torch.Tensor,
        text_pos_s: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        enc = Encoded(video_emb, video_mask, audio_emb, audio_mask, text_emb, text_mask,
                      text_pos_s)  # fmt: skip
        logits = self.model.fuse(enc)  # [B, C]
        return logits, torch.softmax(logits, dim=-1)


GRAPH_INPUTS: dict[str, tuple[str, ...]] = {
    "video_encoder": ("frames",),
    "audio_encoder": ("wave",),
    "text_encoder": ("ids", "lengths"),
    "fuse": (
        "video_emb",
        "video_mask",
        "audio_emb",
        "audio_mask",
        "text_emb",
        "text_mask",
        "text_pos_s",
    ),
}


def fuse_graph_inputs(enc: Encoded) -> dict[str, torch.Tensor]:
    """``enc`` as the exported ``fuse`` graph's named inputs (the reverse of
    :class:`FuseGraph`'s conversion)."""
    return dict(zip(GRAPH_INPUTS["fuse"], enc.tensors(), strict=True))


GRAPH_OUTPUTS: dict[str, tuple[str, ...]] = {
    "video_encoder": ("embedding",),
    "audio_encoder": ("embedding",),
    "text_encoder": ("embedding",),
    "fuse": ("logits", "probs"),
}
DYNAMIC_AXES: dict[str, dict[str, dict[int, str]]] = {
    "video_encoder": {"frames": {0: "N", 1: "H", 2: "W"}, "embedding": {0: "N"}},
    "audio_encoder": {"wave": {0: "N"}, "embedding": {0: "N"}},
    "text_encoder": {"ids": {0: "N", 1: "L"}, "lengths": {0: "N"}, "embedding": {0: "N"}},
    "fuse": {
        "video_emb": {0: "B", 1: "Tv"},
        "video_mask": {0: "B", 1: "Tv"},
        "audio_emb": {0: "B", 1: "Ta"},
        "audio_mask": {0: "B", 1: "Ta"},
        "text_emb": {0: "B", 1: "Tt"},
        "text_mask": {0: "B", 1: "Tt"},
        "text_pos_s": {0: "B", 1: "Tt"},
        "logits": {0: "B"},
        "probs": {0: "B"},
    },
}


def graphs(model: FusionModel) -> dict[str, nn.Module]:
    """The four graph modules of ``model``, as both formats export them (sharing its weights)."""
    return {
        "video_encoder": VideoEncoderGraph(model).eval(),
        "audio_encoder": AudioEncoderGraph(model).eval(),
        "text_encoder": TextEncoderGraph(model).eval(),
        "fuse": FuseGraph(model).eval(),
    }


def example_inputs(spec: ModelSpec) -> dict[str, tuple[torch.Tensor, ...]]:
    """Fixed (seeded) tracing inputs for each graph.

    Every size differs from the others and from 1, so no axis is mistaken for a constant;
    Tt exceeds ``max_text_events`` and some masks are False, so no branch is skipped.
    """
    g = torch.Generator().manual_seed(0)
    d, size = spec.d_model, spec.image_size
    b, tv, ta, tt = 2, 5, 6, spec.max_text_events + 3

    def mask(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g) > 0.3

    return {
        "video_encoder": (torch.randint(0, 256, (3, size, size, 3), generator=g).to(torch.uint8),),
        "audio_encoder": (torch.randn(3, spec.segment_samples, generator=g),),
        "text_encoder": (
            torch.randint(1, 257, (3, 7), generator=g),
            torch.tensor([7, 2, 0], dtype=torch.int64),
        ),
        "fuse": (
            torch.randn(b, tv, d, generator=g),
            mask(b, tv),
            torch.randn(b, ta, d, generator=g),
            mask(b, ta),
            torch.randn(b, tt, d, generator=g),
            mask(b, tt),
            torch.rand(b, tt, generator=g) * 2.0,
        ),
    }
