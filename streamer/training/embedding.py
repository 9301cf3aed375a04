"""Training on frozen encoders without re-running them: each backbone runs once per item.

A :class:`~models.encoders.frozen.FrozenEncoder` never changes while the rest trains, so
its backbone's features of a :class:`WindowSet`'s unique items (frames ``[F, H, W, 3]``,
audio segments ``[A, S]``, texts ``[E]``) are computed once, batched and without
gradients (:func:`embed_items`), and training and evaluation read them
(:class:`EmbeddedWindows`): the encoder then runs its trainable projection alone
(``FullBatch.features``). Overlapping windows share items, so each frame is embedded once
instead of once per window per epoch.

The features are cached beside the window cache, ``DATA/.cache/<split>-<windows>.<modality>-
<encoder>.npy`` (float16 ``[N, dim]``), keyed by the window cache's key (the files, the
spec, the window settings) and the encoder's identity (:func:`encoder_key`: its name and
options, its weights' provenance, the spec's input fields). A file that does not load
or has the wrong shape is recomputed and rewritten; files are written to a temporary name
and renamed, so a crash leaves no partial file under the real name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from models.encoders.frozen import FrozenEncoder
from models.fusion import FullBatch, FusionModel
from models.spec import ModelSpec
from models.tokenizer import batch_encode
from models.windows import WindowInputs, collate
from streamer.training.clipset import WindowSet

log = logging.getLogger(__name__)

FEATURES_VERSION = 1
ITEMS = {"video": "frames", "audio": "segments", "text": "texts"}
BATCH = 64  # items per backbone call

Progress = Callable[[str, int, int], None]  # (modality, done, total)


def frozen_modalities(model: FusionModel) -> tuple[str, ...]:
    """The modalities whose encoder is a frozen backbone (their features can be cached)."""
    return tuple(m for m in ITEMS if isinstance(model.encoder(m), FrozenEncoder))


def encoder_key(model: FusionModel, modality: str) -> str:
    """What identifies ``modality``'s backbone output: its registered name and options,
    the provenance of its weights, its dimension and the spec fields its input follows."""
    enc = model.encoder(modality)
    assert isinstance(enc, FrozenEncoder)
    spec = model.spec
    ident = [
        FEATURES_VERSION, modality, model.encoder_choices[modality].to_dict(),
        enc.provenance.to_dict(), enc.dim, spec.image_size, spec.audio_rate,
        spec.segment_samples, spec.text_max_bytes,
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def item_count(ws: WindowSet, modality: str) -> int:
    return {"video": len(ws.frames), "audio": len(ws.segments), "text": len(ws.texts)}[modality]


def _inputs(ws: WindowSet, modality: str, lo: int, hi: int, spec: ModelSpec) -> list[torch.Tensor]:
    if modality == "video":
        return [torch.from_numpy(np.ascontiguousarray(ws.frames[lo:hi]))]
    if modality == "audio":
        return [torch.from_numpy(ws.segments[lo:hi].astype(np.float32))]
    ids, lengths = batch_encode(ws.texts[lo:hi], spec.text_max_bytes)
    return [ids, lengths]


def embed_items(
    model: FusionModel,
    ws: WindowSet,
    modality: str,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> npt.NDArray[np.float32]:
    """``modality``'s backbone over every unique item of ``ws``: float32 ``[N, dim]``."""
    enc = model.encoder(modality)
    assert isinstance(enc, FrozenEncoder)
    enc.to(device)
    n = item_count(ws, modality)
    out = np.zeros((n, enc.dim), dtype=np.float32)
    for lo in range(0, n, BATCH):
        hi = min(lo + BATCH, n)
        x = [t.to(device) for t in _inputs(ws, modality, lo, hi, model.spec)]
        out[lo:hi] = enc.features(*x).cpu().numpy()
        if progress is not None:
            progress(modality, hi, n)
    return out


@dataclass
class EmbedReport:
    """What :func:`cached_features` did: items embedded and items read from the cache."""

    embedded: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)


def cache_path(cache_dir: Path, split: str, ws: WindowSet, model: FusionModel, m: str) -> Path:
    return cache_dir / f"{split}-{ws.key}.{m}-{encoder_key(model, m)}.npy"


def _read(path: Path, shape: tuple[int, int]) -> npt.NDArray[np.floating] | None:
    if not path.is_file():
        return None
    try:
        arr: npt.NDArray[np.floating] = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        log.warning("%s: unreadable (%s); embedding again", path, e)
        return None
    if arr.shape != shape or arr.dtype.kind != "f":
        log.warning("%s: %s %s, expected %s; embedding again", path, arr.dtype, arr.shape, shape)
        return None
    return arr


def stored(feats: npt.NDArray[np.float32]) -> npt.NDArray[np.floating]:
    """What the cache keeps of ``feats``: float16, unless that overflows."""
    small = feats.astype(np.float16)
    return small if bool(np.isfinite(small).all()) else feats


def _write(path: Path, arr: npt.NDArray[np.floating]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.save(f, arr, allow_pickle=False)
    tmp.replace(path)


def cached_features(
    model: FusionModel,
    ws: WindowSet,
    cache_dir: Path,
    split: str,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> tuple[dict[str, npt.NDArray[np.floating]], EmbedReport]:
    """The features of every frozen modality of ``model`` over ``ws``'s items (as the cache
    stores them, :func:`stored`), read from ``cache_dir`` or embedded (and cached) where
    missing; ``ws.key`` "" caches nothing."""
    out: dict[str, npt.NDArray[np.floating]] = {}
    report = EmbedReport()
    for m in frozen_modalities(model):
        enc = model.encoder(m)
        assert isinstance(enc, FrozenEncoder)
        shape = (item_count(ws, m), enc.dim)
        path = cache_path(cache_dir, split, ws, model, m) if ws.key else None
        arr = _read(path, shape) if path is not None else None
        if arr is not None:
            report.cached[m] = shape[0]
        else:
            # what a later run reads back, so a first and a second run train alike
            arr = stored(embed_items(model, ws, m, device=device, progress=progress))
            report.embedded[m] = shape[0]
            if path is not None:
                _write(path, arr)
        out[m] = arr
    return out, report


def _gather(table: npt.NDArray[np.floating], idx: npt.NDArray[np.int32]) -> torch.Tensor:
    """Rows of ``table`` at ``idx`` ``[B, T]`` (-1: zeros) -> ``[B, T, dim]``."""
    if len(table) == 0:
        return torch.zeros((*idx.shape, table.shape[1]), dtype=torch.float32)
    rows = table[np.maximum(idx, 0)] * (idx >= 0)[..., None]
    return torch.from_numpy(np.ascontiguousarray(rows))


class EmbeddedWindows:
    """The windows of ``ws`` as :class:`models.windows.Batches`: a modality of ``features``
    as its backbone's features (``FullBatch.features``), the others raw as ``collate``
    makes them."""

    def __init__(
        self, ws: WindowSet, features: dict[str, npt.NDArray[np.floating]], spec: ModelSpec
    ) -> None:
        self.ws = ws
        self.features = features
        self.spec = spec

    def __len__(self) -> int:
        return len(self.ws)

    def batch(self, idx: Sequence[int]) -> FullBatch:
        ws, feats = self.ws, self.features
        raw = [ws.inputs(i) for i in idx]
        full = collate(
            [
                WindowInputs(
                    w.session,
                    [] if "video" in feats else w.video,
                    [] if "audio" in feats else w.audio,
                    [] if "text" in feats else w.text,
                )
                for w in raw
            ],
            self.spec,
        )
        b = len(raw)
        vi, ai = ws.video_idx[list(idx)], ws.audio_idx[list(idx)]
        tt = max([0, *(len(w.text) for w in raw)])
        ti = ws.text_idx[list(idx)][:, :tt]
        fields: dict[str, torch.Tensor] = {}
        if "video" in feats:
            fields["video"] = torch.zeros((*vi.shape, 0, 0, 3), dtype=torch.uint8)
            fields["video_mask"] = torch.from_numpy(vi >= 0)
        if "audio" in feats:
            fields["audio"] = torch.zeros((*ai.shape, 0), dtype=torch.float32)
            fields["audio_mask"] = torch.from_numpy(ai >= 0)
        if "text" in feats:
            pos = [[t[2] for t in w.text] + [0.0] * (tt - len(w.text)) for w in raw]
            fields["text_ids"] = torch.zeros((b, tt, 0), dtype=torch.int64)
            fields["text_lengths"] = torch.zeros((b, tt), dtype=torch.int64)
            fields["text_mask"] = torch.from_numpy(ti >= 0)
            fields["text_pos_s"] = torch.tensor(pos, dtype=torch.float32).reshape(b, tt)
        index = {"video": vi, "audio": ai, "text": ti}
        features = {m: _gather(table, index[m]) for m, table in feats.items()}
        return FullBatch(
            **{f: fields.get(f, getattr(full, f)) for f in ("video", "video_mask", "audio",
               "audio_mask", "text_ids", "text_lengths", "text_mask", "text_pos_s")},
            features=features,
        )  # fmt: skip
