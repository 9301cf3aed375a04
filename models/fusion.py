"""The fusion model: three encoders, one token per item, a small transformer over a window.

Shapes: B windows, Tv video slots, Ta audio segments, Tt text events, L text bytes,
H x W x 3 frames, S = ``spec.segment_samples``, D = ``spec.d_model``, C = ``len(spec.labels)``.
Tv and Ta follow from the window length (``length * fps`` and ``length / audio_segment``);
nothing here fixes them.

Token layout of a window: ``[CLS] + Tv video + Ta audio + Tt text``. Each token is its
embedding + a modality embedding + a learned embedding of its time bucket
``floor(t * fps)`` (clipped to ``[0, max_positions - 1]``), where t is seconds from the window
start: video slot i at ``(i + 0.5) / fps``, audio segment j at ``(j + 0.5) * audio_segment``,
a text event at its own offset. Missing items are masked out of attention; CLS never is,
so a window with nothing present still gives finite logits.

Only the CLS output is read. In eval mode :func:`models.readout.cls_readout` computes it
(the same math in plain ops, skipping what only the other tokens' outputs need); that is
also what the ONNX and TorchScript exports trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from models.encoders.frozen import FrozenEncoder
from models.encoders.registry import MODALITIES, EncoderChoice, build_encoder, encoder_choices
from models.readout import cls_readout
from models.spec import ModelSpec

_CLS, _VIDEO, _AUDIO, _TEXT = range(4)


@dataclass(frozen=True, slots=True)
class FullBatch:
    """Raw inputs of B windows; ``*_mask`` is True where the item is present.

    ``features`` holds, for a modality whose encoder is a :class:`FrozenEncoder`, its
    backbone's features computed beforehand (``[B, T, dim]``, training's embedding cache):
    the encoder then runs its projection alone on them, and that modality's raw tensor
    is not read (it may be empty). The live runtime never sets it."""

    video: torch.Tensor  # uint8 [B, Tv, H, W, 3]
    video_mask: torch.Tensor  # bool [B, Tv]
    audio: torch.Tensor  # float32 [B, Ta, S]
    audio_mask: torch.Tensor  # bool [B, Ta]
    text_ids: torch.Tensor  # int64 [B, Tt, L]
    text_lengths: torch.Tensor  # int64 [B, Tt]
    text_mask: torch.Tensor  # bool [B, Tt]
    text_pos_s: torch.Tensor  # float32 [B, Tt], seconds from the window start
    features: Mapping[str, torch.Tensor] = field(default_factory=dict)  # modality -> [B, T, dim]

    def to(self, device: torch.device | str) -> FullBatch:
        raw = {f: getattr(self, f).to(device) for f in self.__dataclass_fields__ if f != "features"}
        return FullBatch(**raw, features={m: x.to(device) for m, x in self.features.items()})


@dataclass(frozen=True, slots=True)
class Encoded:
    """Item embeddings of B windows, before fusion; masks as in :class:`FullBatch`."""

    video: torch.Tensor  # [B, Tv, D]
    video_mask: torch.Tensor  # bool [B, Tv]
    audio: torch.Tensor  # [B, Ta, D]
    audio_mask: torch.Tensor  # bool [B, Ta]
    text: torch.Tensor  # [B, Tt, D]
    text_mask: torch.Tensor  # bool [B, Tt], the events fusion attends to
    text_pos_s: torch.Tensor  # float32 [B, Tt]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The seven tensors in field order, which is also the order of the exported
        ``fuse`` graph's inputs (:mod:`models.export`)."""
        return tuple(getattr(self, f) for f in self.__dataclass_fields__)


def recent_text_mask(mask: torch.Tensor, pos_s: torch.Tensor, keep: int) -> torch.Tensor:
    """``mask`` [B, Tt] narrowed to the ``keep`` most recent present events of each row.

    Most recent = largest ``pos_s``; among equal times the later index wins. Each event is
    ranked by how many present events beat it (pairwise, [B, Tt, Tt]; Tt is small), which
    needs no sort and no shape-dependent branch, so it exports unchanged.
    """
    tt = mask.shape[1]
    idx = torch.arange(tt, device=mask.device)  # [Tt]
    later = idx.view(1, tt) > idx.view(tt, 1)  # [Tt(i), Tt(j)]: j comes after i
    p_i, p_j = pos_s.unsqueeze(2), pos_s.unsqueeze(1)  # [B, Tt, 1], [B, 1, Tt]
    beats = (p_j > p_i) | ((p_j == p_i) & later)  # [B, Tt(i), Tt(j)]: j is more recent than i
    rank = (beats & mask.unsqueeze(1)).sum(dim=2)  # [B, Tt]: present events more recent
    return mask & (rank < keep)


def _encode_present(
    encode: Callable[..., torch.Tensor], mask: torch.Tensor, d_model: int, *items: torch.Tensor
) -> torch.Tensor:
    """``encode`` on the present items only: ``[B, T, ...]`` -> ``[B, T, D]``, zeros if absent."""
    b, t = mask.shape
    flat = mask.reshape(b * t)
    out = items[0].new_zeros((b * t, d_model), dtype=torch.float32)
    if bool(flat.any()):
        picked = [x.reshape(b * t, *x.shape[2:])[flat] for x in items]
        out = out.index_put((flat,), encode(*picked).to(out.dtype))
    return out.reshape(b, t, d_model)


class FusionModel(nn.Module):
    """Encoders + transformer fusion; ``forward(FullBatch) -> logits [B, C]``.

    ``encoders`` names each modality's encoder in :mod:`models.encoders.registry` (a name or
    an :class:`EncoderChoice`; ``builtin`` where not given). A frozen encoder
    (:meth:`set_frozen`) has no gradients and stays in eval mode through :meth:`train`.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        encoders: Mapping[str, str | EncoderChoice] | None = None,
        dropout: float = 0.1,
        layers: int = 2,
    ) -> None:
        super().__init__()
        self.spec = spec
        d = spec.d_model
        self.encoder_choices = encoder_choices(encoders)
        self.frozen: frozenset[str] = frozenset()
        self.video_encoder = build_encoder("video", self.encoder_choices["video"], spec)
        self.audio_encoder = build_encoder("audio", self.encoder_choices["audio"], spec)
        self.text_encoder = build_encoder("text", self.encoder_choices["text"], spec)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.modality = nn.Embedding(4, d)
        self.time = nn.Embedding(spec.max_positions, d)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.modality.weight, std=0.02)
        nn.init.normal_(self.time.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d,
            nhead=4,
            dim_feedforward=2 * d,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.fusion = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, len(spec.labels))

    # -- encoders: one item per row -------------------------------------------------------

    def encoder(self, modality: str) -> nn.Module:
        """The encoder of ``modality`` (video, audio or text)."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        module: nn.Module = getattr(self, f"{modality}_encoder")
        return module

    def set_frozen(self, modalities: Iterable[str]) -> None:
        """Freeze exactly these encoders (no gradients, eval mode); the others train."""
        frozen = frozenset(modalities)
        for modality in frozen:
            self.encoder(modality)  # an unknown name fails before anything changes
        for modality in MODALITIES:
            encoder = self.encoder(modality)
            encoder.requires_grad_(modality not in frozen)
            encoder.train(self.training and modality not in frozen)
        self.frozen = frozen

    def train(self, mode: bool = True) -> FusionModel:
        super().train(mode)
        for modality in self.frozen:
            self.encoder(modality).eval()
        return self

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> ``[N, D]``."""
        if frames.shape[0] == 0:
            return frames.new_zeros((0, self.spec.d_model), dtype=torch.float32)
        out: torch.Tensor = self.video_encoder(frames)
        return out

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """float32 ``[N, S]`` -> ``[N, D]``."""
        if wave.shape[0] == 0:
            return wave.new_zeros((0, self.spec.d_model), dtype=torch.float32)
        out: torch.Tensor = self.audio_encoder(wave)
        return out

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids int64 ``[N, L]``, lengths int64 ``[N]`` -> ``[N, D]``."""
        if ids.shape[0] == 0:
            return ids.new_zeros((0, self.spec.d_model), dtype=torch.float32)
        out: torch.Tensor = self.text_encoder(ids, lengths)
        return out

    # -- fusion ----------------------------------------------------------------------------

    def time_bucket(self, t_s: torch.Tensor) -> torch.Tensor:
        """Seconds from the window start (any shape) -> int64 time-embedding index."""
        bucket = torch.floor(t_s.float() * self.spec.fps).long()
        return bucket.clamp(0, self.spec.max_positions - 1)

    def _slot_times(self, n: int, period_s: float, device: torch.device) -> torch.Tensor:
        return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) * period_s  # [n]

    def fuse(self, enc: Encoded) -> torch.Tensor:
        """Item embeddings of B windows -> logits ``[B, C]``.

        Of the present text events only the ``max_text_events`` most recent are attended to.
        """
        b, tv, _ = enc.video.shape
        ta, dev = enc.audio.shape[1], enc.video.device
        text_mask = recent_text_mask(enc.text_mask, enc.text_pos_s, self.spec.max_text_events)
        tv_s = self._slot_times(tv, 1.0 / self.spec.fps, dev).expand(b, tv)  # [B, Tv]
        ta_s = self._slot_times(ta, self.spec.audio_segment, dev).expand(b, ta)  # [B, Ta]
        mod = self.modality.weight  # [4, D]
        tokens = torch.cat(
            [
                (self.cls + mod[_CLS] + self.time.weight[0]).expand(b, 1, -1),
                enc.video + mod[_VIDEO] + self.time(self.time_bucket(tv_s)),
                enc.audio + mod[_AUDIO] + self.time(self.time_bucket(ta_s)),
                enc.text + mod[_TEXT] + self.time(self.time_bucket(enc.text_pos_s)),
            ],
            dim=1,
        )  # [B, 1 + Tv + Ta + Tt, D]
        present = torch.cat(
            [
                torch.ones(b, 1, dtype=torch.bool, device=dev),
                enc.video_mask,
                enc.audio_mask,
                text_mask,
            ],
            dim=1,
        )  # [B, 1 + Tv + Ta + Tt]
        if self.training:
            cls = self.fusion(tokens, src_key_padding_mask=~present)[:, 0]  # [B, D]
        else:  # the same math in eval mode, skipping what only the other tokens' outputs need
            cls = cls_readout(self.fusion, tokens, present)  # [B, D]
        logits: torch.Tensor = self.head(self.norm(cls))  # [B, C]
        return logits

    def _projection(self, modality: str) -> Callable[[torch.Tensor], torch.Tensor]:
        encoder = self.encoder(modality)
        if not isinstance(encoder, FrozenEncoder):
            raise ValueError(f"precomputed {modality} features need a frozen encoder")
        return encoder.project

    def encode_batch(self, batch: FullBatch) -> Encoded:
        """Every present item of B windows through its encoder (absent items: zeros); a
        modality in ``batch.features`` through its encoder's projection alone."""
        d = self.spec.d_model
        text_mask = recent_text_mask(batch.text_mask, batch.text_pos_s, self.spec.max_text_events)
        raw: dict[str, tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]] = {
            "video": (self.encode_video, (batch.video,)),
            "audio": (self.encode_audio, (batch.audio,)),
            "text": (self.encode_text, (batch.text_ids, batch.text_lengths)),
        }
        for modality, feats in batch.features.items():
            raw[modality] = (self._projection(modality), (feats,))
        masks = {"video": batch.video_mask, "audio": batch.audio_mask, "text": text_mask}
        emb = {m: _encode_present(f, masks[m], d, *xs) for m, (f, xs) in raw.items()}
        return Encoded(
            video=emb["video"],
            video_mask=batch.video_mask,
            audio=emb["audio"],
            audio_mask=batch.audio_mask,
            text=emb["text"],
            text_mask=text_mask,
            text_pos_s=batch.text_pos_s,
        )

    def forward(self, batch: FullBatch) -> torch.Tensor:
        """Full recompute from raw inputs -> logits ``[B, C]``; what training uses."""
        return self.fuse(self.encode_batch(batch))
