"""Incremental inference: encode each item once, cache its embedding, fuse every window.

Shapes: B windows per call, Tv / Ta / Tt slots per window (the longest in the call; shorter
windows are padded and masked), S = ``spec.segment_samples``, D = ``spec.d_model``,
C = ``len(spec.labels)``.

Called from one worker thread; nothing here locks. Each call encodes only the items whose
``(session, modality, key)`` is not cached, with one encoder call per modality for all
windows of the call, then fuses all windows in one batch. The caller guarantees that an
item's content never changes for a given key.

Cache policy (bounded): every window of a session advances that session's tick, and each
entry remembers the tick of the last window that used it. After a call, a session's
entries unused for more than ``max_idle_windows`` of its windows are dropped (a sliding
window never returns to items it has passed; the grace covers a modality marked missing
for a window or two), and beyond ``max_entries`` per session the least recently used go.
At most ``max_sessions`` sessions are kept (least recently used dropped);
``drop_session`` and ``evict`` free memory explicitly.

The cache and batching live in :class:`CachedFusion`; a runtime supplies the math through
four hooks (``_encode_video``, ``_encode_audio``, ``_encode_text``, and ``_fuse``, which
takes the window embeddings as one typed :class:`models.fusion.Encoded`).
:class:`IncrementalFusion` runs a ``FusionModel`` in PyTorch;
``models.onnx_runtime.OnnxFusion`` runs the exported graphs in onnxruntime.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.cudagraphs import GraphedFuse
from models.encoders.frozen import FrozenEncoder
from models.fusion import Encoded, FusionModel
from models.spec import ModelSpec
from models.tags import ItemTags, Tag, window_tags
from models.tokenizer import batch_encode
from models.windows import WindowInputs

__all__ = ["MODALITIES", "PRECISIONS", "CachedFusion", "IncrementalFusion", "WindowInputs"]

# precision -> the autocast dtype (None: plain float32)
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

MODALITIES = ("video", "audio", "text")
log = logging.getLogger(__name__)
_Key = tuple[str, Hashable]  # (modality, key)


@dataclass(slots=True)
class _Session:
    tick: int = 0  # windows seen
    # (modality, key) -> (embedding [D], tick of last use, the item's tags or None);
    # ordered by last use
    entries: OrderedDict[_Key, tuple[torch.Tensor, int, ItemTags | None]] = field(
        default_factory=OrderedDict
    )


@dataclass(slots=True)
class _Pending:
    """Items of one modality to encode in this call, deduplicated per (session, key)."""

    index: dict[tuple[Hashable, Hashable], int] = field(default_factory=dict)
    payload: list[object] = field(default_factory=list)

    def add(self, session: Hashable, key: Hashable, payload: object) -> None:
        i = self.index.get((session, key))
        if i is None:
            self.index[(session, key)] = len(self.payload)
            self.payload.append(payload)
        elif self.payload[i] is None:  # named by key before the window that carries it
            self.payload[i] = payload


class CachedFusion(ABC):
    """``windows -> probabilities [B, C]`` (on CPU), reusing cached embeddings.

    The runtime-independent part: the per-session cache, deduplication and batching.
    Subclasses implement the encoder and fusion hooks; embeddings are cached as ``[D]``
    tensors on ``device``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: torch.device | str = "cpu",
        max_entries: int = 4096,
        *,
        max_idle_windows: int = 2,
        max_sessions: int = 1024,
    ) -> None:
        if max_entries < 1 or max_idle_windows < 0 or max_sessions < 1:
            raise ValueError("max_entries and max_sessions must be >= 1, max_idle_windows >= 0")
        self.device = torch.device(device)
        self.spec = spec
        self.max_entries = max_entries
        self.max_idle_windows = max_idle_windows
        self.max_sessions = max_sessions
        self.encoded: dict[str, int] = dict.fromkeys(MODALITIES, 0)
        self._sessions: OrderedDict[Hashable, _Session] = OrderedDict()

    # -- runtime hooks ---------------------------------------------------------------------

    @abstractmethod
    def _encode_video(self, frames: npt.NDArray[np.uint8]) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` (N >= 1) -> ``[N, D]`` on ``device``."""

    @abstractmethod
    def _encode_audio(self, wave: npt.NDArray[np.float32]) -> torch.Tensor:
        """float32 ``[N, S]`` (N >= 1) -> ``[N, D]`` on ``device``."""

    @abstractmethod
    def _encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids int64 ``[N, L]``, lengths int64 ``[N]`` (CPU, N >= 1) -> ``[N, D]`` on ``device``."""

    @abstractmethod
    def _fuse(self, enc: Encoded) -> torch.Tensor:
        """Embeddings of B windows (on ``device``) -> probabilities ``[B, C]`` float32, CPU."""

    def _embed(
        self, modality: str, inputs: tuple[Any, ...]
    ) -> tuple[torch.Tensor, list[ItemTags] | None]:
        """The items' embeddings (``inputs`` as for the modality's hook) and their tags, or
        None: this runtime has no tagger for ``modality`` (the default)."""
        if modality == "video":
            return self._encode_video(*inputs), None
        if modality == "audio":
            return self._encode_audio(*inputs), None
        return self._encode_text(*inputs), None

    @property
    def tagging(self) -> bool:
        """Whether any modality has a tagger (then windows get tags, maybe none)."""
        return False

    # -- cache management ------------------------------------------------------------------

    def cache_size(self, session: Hashable | None = None) -> int:
        """Cached embeddings of one session, or of all sessions."""
        if session is not None:
            s = self._sessions.get(session)
            return 0 if s is None else len(s.entries)
        return sum(len(s.entries) for s in self._sessions.values())

    @property
    def session_count(self) -> int:
        """Sessions with a cache."""
        return len(self._sessions)

    def evict(self, session: Hashable, keep: Callable[[Hashable], bool]) -> None:
        """Drop the session's cached items whose key fails ``keep(key)`` (any modality)."""
        s = self._sessions.get(session)
        if s is not None:
            for k in [k for k in s.entries if not keep(k[1])]:
                del s.entries[k]

    def cached(self, session: Hashable, modality: str, key: Hashable) -> bool:
        """Whether the item's embedding is in the session's cache."""
        s = self._sessions.get(session)
        return s is not None and (modality, key) in s.entries

    def drop_session(self, session: Hashable) -> None:
        """Forget everything cached for ``session``."""
        self._sessions.pop(session, None)

    def _prune(self, touched: set[Hashable]) -> None:
        for sid in touched:
            s = self._sessions[sid]
            oldest_kept = s.tick - self.max_idle_windows
            while s.entries:
                _, (_, last, _) = next(iter(s.entries.items()))
                if len(s.entries) <= self.max_entries and last >= oldest_kept:
                    break
                s.entries.popitem(last=False)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    # -- inference ---------------------------------------------------------------------------

    def _session(self, sid: Hashable) -> _Session:
        s = self._sessions.get(sid)
        if s is None:
            s = self._sessions[sid] = _Session()
        else:
            self._sessions.move_to_end(sid)
        return s

    def _recent_text(self, w: WindowInputs) -> list[tuple[Hashable, str, float]]:
        """The ``max_text_events`` most recent events, in input order (ties: later wins)."""
        keep = self.spec.max_text_events
        if len(w.text) <= keep:
            return list(w.text)
        ranked = sorted(range(len(w.text)), key=lambda i: (w.text[i][2], i), reverse=True)
        return [w.text[i] for i in sorted(ranked[:keep])]

    def _encode(
        self, modality: str, pending: _Pending
    ) -> tuple[torch.Tensor, list[ItemTags] | None]:
        """The pending items of one modality -> ``[N, D]`` on the device, and their tags."""
        self.encoded[modality] += len(pending.payload)
        inputs: tuple[Any, ...]
        if modality == "video":
            inputs = (np.stack([np.asarray(p, dtype=np.uint8) for p in pending.payload]),)
        elif modality == "audio":
            wave = np.stack([np.asarray(p, dtype=np.float32) for p in pending.payload])
            if wave.shape[1:] != (self.spec.segment_samples,):
                raise ValueError(
                    f"audio segments must be [{self.spec.segment_samples}], got {wave.shape[1:]}"
                )
            inputs = (wave,)
        else:
            texts = [str(p) for p in pending.payload]
            inputs = batch_encode(texts, self.spec.text_max_bytes)  # [N, L], [N]
        return self._embed(modality, inputs)  # [N, D], tags

    def __call__(self, windows: Sequence[WindowInputs]) -> torch.Tensor:
        """Probabilities ``[B, C]`` (CPU) of the windows."""
        return self.infer(windows)[0]

    def infer(
        self, windows: Sequence[WindowInputs]
    ) -> tuple[torch.Tensor, list[tuple[Tag, ...]] | None]:
        """Probabilities ``[B, C]`` (CPU) and, where the runtime tags (:attr:`tagging`),
        each window's tags (:mod:`models.tags`)."""
        n_labels, d = len(self.spec.labels), self.spec.d_model
        if not windows:
            return torch.empty(0, n_labels), ([] if self.tagging else None)
        with torch.inference_mode():
            texts = [self._recent_text(w) for w in windows]
            sessions = [self._session(w.session) for w in windows]
            # 1. find what is not cached yet
            pending = {m: _Pending() for m in MODALITIES}
            for w, s, text in zip(windows, sessions, texts, strict=True):
                for modality, items in (("video", w.video), ("audio", w.audio)):
                    for item in items:
                        if item is not None and (modality, item[0]) not in s.entries:
                            pending[modality].add(w.session, item[0], item[1])
                for key, body, _ in text:
                    if ("text", key) not in s.entries:
                        pending["text"].add(w.session, key, body)
            # 2. one encoder call per modality for the whole call
            fresh = {m: self._encode(m, p) for m, p in pending.items() if p.payload}
            item_tags: list[dict[str, list[ItemTags]]] = []  # per window, per modality
            # 3. gather the embeddings of every slot, touching the cache in window order
            zero = torch.zeros(d, device=self.device)
            tv = max(len(w.video) for w in windows)
            ta = max(len(w.audio) for w in windows)
            tt = max(len(t) for t in texts)
            rows: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITIES}
            masks: dict[str, list[bool]] = {m: [] for m in MODALITIES}
            pos: list[float] = []

            def take(modality: str, sid: Hashable, s: _Session, key: Hashable) -> None:
                hit = s.entries.get((modality, key))
                if hit is None:
                    embs, tags_of = fresh[modality]
                    i = pending[modality].index[(sid, key)]
                    emb, tags = embs[i], (None if tags_of is None else tags_of[i])
                else:
                    emb, _, tags = hit
                    s.entries.move_to_end((modality, key))
                s.entries[(modality, key)] = (emb, s.tick, tags)
                rows[modality].append(emb)
                masks[modality].append(True)
                if tags is not None:
                    item_tags[-1].setdefault(modality, []).append(tags)

            def pad(modality: str, n: int) -> None:
                rows[modality].extend([zero] * n)
                masks[modality].extend([False] * n)

            for w, s, text in zip(windows, sessions, texts, strict=True):
                s.tick += 1
                item_tags.append({})
                for modality, items, width in (("video", w.video, tv), ("audio", w.audio, ta)):
                    for item in items:
                        if item is None:
                            pad(modality, 1)
                        else:
                            take(modality, w.session, s, item[0])
                    pad(modality, width - len(items))
                for key, _, offset in text:
                    take("text", w.session, s, key)
                    pos.append(float(offset))
                pad("text", tt - len(text))
                pos.extend([0.0] * (tt - len(text)))
            b = len(windows)

            def stacked(modality: str, t: int) -> tuple[torch.Tensor, torch.Tensor]:
                emb = torch.stack(rows[modality]) if t else zero.new_zeros(b * t, d)
                mask = torch.tensor(masks[modality], dtype=torch.bool)
                return emb.view(b, t, d), mask.view(b, t).to(self.device)

            video_emb, video_mask = stacked("video", tv)
            audio_emb, audio_mask = stacked("audio", ta)
            text_emb, text_mask = stacked("text", tt)
            text_pos = torch.tensor(pos, dtype=torch.float32).view(b, tt).to(self.device)
            enc = Encoded(video_emb, video_mask, audio_emb, audio_mask, text_emb, text_mask,
                          text_pos)  # fmt: skip
            probs = self._fuse(enc)  # [B, C]
        self._prune({w.session for w in windows})
        if not self.tagging:
            return probs, None
        return probs, [window_tags({m: t[m] for m in MODALITIES if m in t}) for t in item_tags]


class IncrementalFusion(CachedFusion):
    """``windows -> probabilities [B, C]`` (softmax, on CPU) with a PyTorch ``FusionModel``.

    Moves ``model`` to ``device`` and puts it in eval mode. ``precision`` "bf16" or "fp16"
    runs the encoders and the fusion step under ``torch.autocast`` (mixed precision: the
    weights stay float32; embeddings are cached and probabilities returned as float32).
    On CUDA, inputs are copied from pinned memory without blocking the host, and
    ``cuda_graphs`` replays the fusion step from CUDA graphs (:mod:`models.cudagraphs`).
    """

    def __init__(
        self,
        model: FusionModel,
        device: torch.device | str = "cpu",
        max_entries: int = 4096,
        *,
        max_idle_windows: int = 2,
        max_sessions: int = 1024,
        precision: str = "fp32",
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__(
            model.spec,
            device,
            max_entries,
            max_idle_windows=max_idle_windows,
            max_sessions=max_sessions,
        )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, not {self.device}")
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.graphed = GraphedFuse(self.model, amp=PRECISIONS[precision]) if cuda_graphs else None

    def infer(
        self, windows: Sequence[WindowInputs]
    ) -> tuple[torch.Tensor, list[tuple[Tag, ...]] | None]:
        if self.model.training:
            self.model.eval()
        return super().infer(windows)

    @property
    def tagging(self) -> bool:
        return any(self._tagger(m) is not None for m in MODALITIES)

    def _tagger(self, modality: str) -> Callable[..., list[ItemTags]] | None:
        enc = self.model.encoder(modality)
        return enc.tagger if isinstance(enc, FrozenEncoder) else None

    def _embed(
        self, modality: str, inputs: tuple[Any, ...]
    ) -> tuple[torch.Tensor, list[ItemTags] | None]:
        enc = self.model.encoder(modality)
        if not isinstance(enc, FrozenEncoder) or enc.tagger is None:
            return super()._embed(modality, inputs)
        args: tuple[torch.Tensor, ...]
        if modality == "text":  # lengths stay on the CPU, as encode_text takes them
            args = (self._to_device(inputs[0]), inputs[1])
        else:
            args = (self._to_device(torch.from_numpy(inputs[0])),)
        with self._amp():
            emb, tags = enc.encode(*args)
        return emb.float(), tags

    def _amp(self) -> contextlib.AbstractContextManager[object]:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def _encode_video(self, frames: npt.NDArray[np.uint8]) -> torch.Tensor:
        with self._amp():
            out = self.model.encode_video(self._to_device(torch.from_numpy(frames)))
        return out.float()

    def _encode_audio(self, wave: npt.NDArray[np.float32]) -> torch.Tensor:
        with self._amp():
            out = self.model.encode_audio(self._to_device(torch.from_numpy(wave)))
        return out.float()

    def _encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with self._amp():
            out = self.model.encode_text(self._to_device(ids), lengths)
        return out.float()

    def _fuse(self, enc: Encoded) -> torch.Tensor:
        if self.graphed is not None:
            try:
                return self.graphed(enc).cpu()  # a copy: the graph's buffer is reused
            except RuntimeError as e:  # a capture or replay the device refused
                log.warning("CUDA graphs failed, the fusion step runs eagerly from now on: %s", e)
                self.graphed = None
        with self._amp():
            logits = self.model.fuse(enc)  # [B, C]
        return torch.softmax(logits.float(), dim=-1).cpu()
