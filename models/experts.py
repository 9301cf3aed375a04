"""One linear classifier per modality on the masked mean of its item embeddings.

Training uses them as auxiliary heads (:func:`models.training.fit`): each encoder gets a
gradient of its own on every window where its modality is present, even when modality
dropout hides it from fusion, so a slow learner (the video CNN) is not starved by the
modalities that learn fast. :class:`models.late_fusion.LateFusionModel` keeps them and
adds their votes to the fused logits.
"""

from __future__ import annotations

import torch
from torch import nn

from models.fusion import Encoded


class ModalityHeads(nn.Module):
    """``forward(Encoded)`` -> per modality (video, audio, text): logits ``[B, C]`` and
    which windows have it (bool ``[B]``)."""

    def __init__(self, d_model: int, classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, classes)) for _ in range(3)
        )
        self.drop = nn.Dropout(dropout)  # of the pooled embedding, in training

    def forward(self, enc: Encoded) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        items = (
            (enc.video, enc.video_mask),
            (enc.audio, enc.audio_mask),
            (enc.text, enc.text_mask),
        )
        for head, (emb, mask) in zip(self.heads, items, strict=True):
            m = mask.unsqueeze(2).to(emb.dtype)  # [B, T, 1]
            pooled = (emb * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # [B, D]
            out.append((head(self.drop(pooled)), mask.any(dim=1)))
        return out
