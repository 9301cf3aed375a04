"""Incremental inference on exported ONNX graphs with onnxruntime (CPU).

Shapes: N items, B windows, Tv / Ta / Tt slots per window, D = ``spec.d_model``,
C = ``len(spec.labels)``; the graphs are described in :mod:`models.export`.

:class:`OnnxFusion` is :class:`models.incremental.IncrementalFusion` with the math moved
to onnxruntime: the same call, cache (by session, modality and key), bounds and counters
(they share :class:`models.incremental.CachedFusion`); torch only holds the cached
embeddings and stacks them. ``onnxruntime`` is imported when an ``OnnxFusion`` is built,
so this module imports without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.encoders.frozen import FrozenEncoder
from models.export import GRAPHS, ExportError, fuse_graph_inputs, read_manifest
from models.export_backbones import BackboneError, rebuild_backbones
from models.fusion import Encoded
from models.incremental import CachedFusion
from models.spec import ModelSpec
from models.tags import ItemTags

__all__ = ["OnnxFusion", "onnxruntime_available"]


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported."""
    try:
        import onnxruntime  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxFusion(CachedFusion):
    """``windows -> probabilities [B, C]`` (on CPU) from an ONNX export directory.

    ``intra_op_threads``: threads each graph may use (``None``: onnxruntime's default, one
    per physical core). Graphs run one at a time (the runtime calls from one thread).
    ``ExportError`` when the directory is not a complete ONNX export, or one of the
    backbones it records outside the graphs (:mod:`models.export_backbones`) cannot be
    rebuilt as recorded; ``ImportError`` when onnxruntime is not installed.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        intra_op_threads: int | None = None,
        max_entries: int = 4096,
        max_idle_windows: int = 2,
        max_sessions: int = 1024,
    ) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped, import-not-found, unused-ignore]

        manifest = read_manifest(directory)
        if manifest.get("runtime") != "onnx":
            raise ExportError(f"{directory}: a {manifest.get('runtime')!r} export, not onnx")
        spec = ModelSpec.from_dict(dict(manifest["spec"]))
        super().__init__(
            spec,
            "cpu",
            max_entries,
            max_idle_windows=max_idle_windows,
            max_sessions=max_sessions,
        )
        self.directory = Path(directory)
        try:  # run here, their features fed to the export's projection graphs
            self._backbones = rebuild_backbones(dict(manifest.get("backbones") or {}), spec)
        except BackboneError as e:
            raise ExportError(f"{directory}: {e}") from None
        self.name = str(manifest["checkpoint"]["name"])
        self.version = str(manifest["checkpoint"]["version"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if intra_op_threads is not None:
            if intra_op_threads < 1:
                raise ValueError("intra_op_threads must be >= 1")
            options.intra_op_num_threads = intra_op_threads
        self._graphs: dict[str, Any] = {}
        for graph in GRAPHS:
            path = self.directory / str(manifest["files"][graph])
            try:
                self._graphs[graph] = ort.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except Exception as e:  # onnxruntime raises its own types for a bad model
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ExportError(f"{path}: onnxruntime cannot load it ({first})") from e

    def _run(self, graph: str, output: str, **inputs: npt.NDArray[Any]) -> npt.NDArray[Any]:
        out = self._graphs[graph].run([output], inputs)
        return np.asarray(out[0])

    def _embedding(self, graph: str, **inputs: npt.NDArray[Any]) -> torch.Tensor:
        return torch.from_numpy(self._run(graph, "embedding", **inputs))  # [N, D]

    def _encode_video(self, frames: npt.NDArray[np.uint8]) -> torch.Tensor:
        return self._embedding("video_encoder", frames=np.ascontiguousarray(frames))

    def _encode_audio(self, wave: npt.NDArray[np.float32]) -> torch.Tensor:
        return self._embedding("audio_encoder", wave=np.ascontiguousarray(wave))

    def _encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._embedding("text_encoder", ids=ids.numpy(), lengths=lengths.numpy())

    @property
    def tagging(self) -> bool:
        return any(b.tagger is not None for b in self._backbones.values())

    def _embed(
        self, modality: str, inputs: tuple[Any, ...]
    ) -> tuple[torch.Tensor, list[ItemTags] | None]:
        backbone: FrozenEncoder | None = self._backbones.get(modality)
        if backbone is None:
            return super()._embed(modality, inputs)
        args = inputs if modality == "text" else (torch.from_numpy(inputs[0]),)
        feats = backbone.features(*args)  # float32 [N, dim]
        tags = None if backbone.tagger is None else backbone.tagger(feats)
        return self._embedding(f"{modality}_encoder", features=feats.numpy()), tags

    def _fuse(self, enc: Encoded) -> torch.Tensor:
        feed = {k: v.contiguous().numpy() for k, v in fuse_graph_inputs(enc).items()}
        probs = self._run("fuse", "probs", **feed)  # [B, C]
        return torch.from_numpy(probs.astype(np.float32, copy=False))
