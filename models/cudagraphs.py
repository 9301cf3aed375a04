"""The fusion step replayed from CUDA graphs: one capture per static shape, then per call
a copy into the graph's input buffers and one replay (a single launch instead of one per
kernel, which at the runner's batch sizes is most of the step's GPU time).

Shapes: B windows per call, Tv / Ta / Tt slots per window, D = ``spec.d_model``,
C = ``len(spec.labels)``; the input is :meth:`models.fusion.FusionModel.fuse`'s ``Encoded``,
and the static buffers are one ``Encoded`` too.

A graph replays fixed kernels on fixed buffers, so the shapes must be static. They are
made so by padding with absent items: B up to a power of two (:func:`bucket`), Tt up to
``spec.max_text_events`` (``CachedFusion`` passes no more per window); Tv and Ta are set
by the window and stay put in a node. Padding changes no output: each window is its own
row (padded rows are cut off), and an absent (masked) token gets no attention weight
(its score is -inf) and is not among the text events ``recent_text_mask`` keeps.
:func:`pad_static` is that padding, shared by the graphs and the CPU tests.

CUDA only; at most ``max_graphs`` shapes are kept (least recently used dropped). The
probabilities returned are a view of the graph's output buffer: valid until the next call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from models.fusion import Encoded, FusionModel

__all__ = ["GraphedFuse", "bucket", "pad_static"]

WARMUP = 3  # eager runs on a side stream before a capture (lazy init, cuBLAS workspaces)


def bucket(n: int) -> int:
    """The smallest power of two >= ``n`` (n >= 1): the padded batch size."""
    if n < 1:
        raise ValueError(f"a batch holds at least one window, got {n}")
    return 1 << (n - 1).bit_length()


def static_shape(enc: Encoded, max_text: int) -> tuple[int, int, int, int]:
    """``(B, Tv, Ta, Tt)`` padded: B to its bucket, Tt to at least ``max_text``."""
    b, tv, _ = enc.video.shape
    return bucket(b), tv, enc.audio.shape[1], max(enc.text.shape[1], max_text)


def _fill(buffers: Encoded, enc: Encoded) -> None:
    """Copy each tensor into the leading corner of its buffer; the rest is zeros (absent)."""
    for buf, x in zip(buffers.tensors(), enc.tensors(), strict=True):
        buf.zero_()
        buf[tuple(slice(0, n) for n in x.shape)].copy_(x)


def _buffers(shape: tuple[int, int, int, int], d: int, device: torch.device) -> Encoded:
    b, tv, ta, tt = shape

    def emb(t: int) -> torch.Tensor:
        return torch.zeros(b, t, d, device=device)

    def mask(t: int) -> torch.Tensor:
        return torch.zeros(b, t, dtype=torch.bool, device=device)

    text_pos = torch.zeros(b, tt, device=device)
    return Encoded(emb(tv), mask(tv), emb(ta), mask(ta), emb(tt), mask(tt), text_pos)


def pad_static(enc: Encoded, max_text: int) -> Encoded:
    """``enc`` padded to :func:`static_shape` with absent items (new tensors)."""
    out = _buffers(static_shape(enc, max_text), enc.video.shape[2], enc.video.device)
    _fill(out, enc)
    return out


@dataclass(slots=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: Encoded  # the static input buffers the graph reads
    probs: torch.Tensor  # float32 [B_bucket, C], the buffer the graph writes


class GraphedFuse:
    """``fuse``'s ``Encoded`` input (on the model's CUDA device) -> softmax probabilities
    ``[B, C]`` float32 on the device; see the module docstring. Runs under autocast to
    ``amp`` when given (captured with the autocast cache off, as graphs need)."""

    def __init__(
        self, model: FusionModel, *, amp: torch.dtype | None = None, max_graphs: int = 8
    ) -> None:
        self.device = next(model.parameters()).device
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, not {self.device}")
        if max_graphs < 1:
            raise ValueError("max_graphs must be >= 1")
        self.model = model
        self.amp = amp
        self.max_graphs = max_graphs
        self.captures = 0
        self.replays = 0
        self._graphs: OrderedDict[tuple[int, int, int, int], _Graph] = OrderedDict()

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def _run(self, inputs: Encoded) -> torch.Tensor:
        with torch.autocast(
            "cuda", dtype=self.amp or torch.float32, enabled=self.amp is not None,
            cache_enabled=False,
        ):  # fmt: skip
            logits = self.model.fuse(inputs)  # [B, C]
        return torch.softmax(logits.float(), dim=-1)

    def _capture(self, shape: tuple[int, int, int, int]) -> _Graph:
        inputs = _buffers(shape, self.model.spec.d_model, self.device)
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self._run(inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # its own memory pool: freed with the graph
            probs = self._run(inputs)
        self.captures += 1
        return _Graph(graph, inputs, probs)

    def __call__(self, enc: Encoded) -> torch.Tensor:
        if self.model.training:
            raise RuntimeError("GraphedFuse replays the eval-mode fusion step; call model.eval()")
        with torch.inference_mode():  # the buffers are inference tensors, written in place
            shape = static_shape(enc, self.model.spec.max_text_events)
            g = self._graphs.get(shape)
            if g is None:
                g = self._graphs[shape] = self._capture(shape)
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
            else:
                self._graphs.move_to_end(shape)
            _fill(g.inputs, enc)
            g.graph.replay()
            self.replays += 1
            return g.probs[: enc.video.shape[0]]
