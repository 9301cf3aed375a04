"""models/cudagraphs.py: the fusion step replayed from CUDA graphs.

The padding to static shapes is checked everywhere (here on the CPU); the captures and
replays need a CUDA device (``gpu`` marker), as does the runtime behind them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_models import (
    DEVICES,
    SPEC,
    TOL,
    Stream,
    _gpu,
    fuse_inputs,
    make_model,
    missing_modalities,
)

from models.cudagraphs import GraphedFuse, bucket, pad_static
from models.fusion import Encoded
from models.incremental import IncrementalFusion


def test_batches_are_padded_to_powers_of_two() -> None:
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17)] == [1, 2, 4, 4, 8, 8, 16, 16, 32]
    with pytest.raises(ValueError, match="at least one"):
        bucket(0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b", [1, 3, 5])
@pytest.mark.parametrize("tt", [0, 3, SPEC.max_text_events + 2])
def test_padding_to_static_shapes_changes_no_output(device: str, b: int, tt: int) -> None:
    model = make_model(device)
    inputs = fuse_inputs(b, tt, device, seed=b * 100 + tt)
    padded = pad_static(inputs, SPEC.max_text_events)
    assert padded.video.shape == (bucket(b), 8, SPEC.d_model)
    assert padded.text.shape[1] == padded.text_pos_s.shape[1] == max(tt, SPEC.max_text_events)
    assert not padded.video_mask[b:].any() and not padded.text_mask[:, tt:].any()  # absent
    with torch.inference_mode():
        want = model.fuse(inputs)
        got = model.fuse(padded)[:b]
    assert (got - want).abs().max() < TOL[device]


def test_cuda_graphs_need_a_cuda_device() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        IncrementalFusion(make_model(), "cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="CUDA"):
        GraphedFuse(make_model())


class _RefusedGraphs:
    calls = 0

    def __call__(self, enc: Encoded) -> torch.Tensor:
        self.calls += 1
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")


def test_a_failing_graph_falls_back_to_the_eager_step_for_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # what a device that refuses a capture or replay looks like to IncrementalFusion:
    # the batch is still answered, eagerly, and no later batch tries the graphs again
    model, rng = make_model(), np.random.default_rng(2)
    streams = [Stream(name, rng) for name in "ab"]
    eager = IncrementalFusion(model)
    inc = IncrementalFusion(model)
    refused = inc.graphed = _RefusedGraphs()  # type: ignore[assignment]
    for w in range(3):
        windows = [s.window(w) for s in streams]
        assert torch.equal(inc(windows), eager(windows))
    assert refused.calls == 1 and inc.graphed is None
    assert "CUDA graphs failed, the fusion step runs eagerly" in caplog.text


# -- on a CUDA device ------------------------------------------------------------------------

PRECISIONS = [
    pytest.param("fp32", marks=_gpu()),
    pytest.param(
        "bf16",
        marks=_gpu(
            pytest.mark.skipif(
                not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
                reason="no bf16 on this CUDA device",
            )
        ),
    ),
]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_graphed_fusion_gives_the_eager_probabilities(precision: str) -> None:
    """Calls of 1-5 windows (buckets 1, 2, 4, 8), whole modalities missing at times: the
    same probabilities as the eager runtime, one capture per bucket, one replay per call,
    and results that stay put when the next call reuses the graph's buffers."""
    model, rng = make_model("cuda"), np.random.default_rng(5)
    streams = [Stream(name, rng) for name in "abcde"]
    eager = IncrementalFusion(model, "cuda", precision=precision)
    graphed = IncrementalFusion(model, "cuda", precision=precision, cuda_graphs=True)
    assert graphed.graphed is not None
    wants, gots, buckets = [], [], set()
    for step in range(12):
        n = 1 + step % 5
        windows = [s.window(step, missing_modalities(rng, step)) for s in streams[:n]]
        wants.append(eager(windows))
        gots.append(graphed(windows))
        buckets.add(bucket(n))
    tol = TOL["cuda"] if precision == "fp32" else 0.02
    for want, got in zip(wants, gots, strict=True):
        assert got.device.type == "cpu" and got.shape == want.shape
        assert (got - want).abs().max() < tol
    assert graphed.graphed.captures == graphed.graphed.graph_count == len(buckets)
    assert graphed.graphed.replays == 12
    assert graphed.encoded == eager.encoded


@pytest.mark.parametrize("_", [pytest.param(None, marks=_gpu())])
def test_graphs_kept_are_bounded(_: None) -> None:
    model = make_model("cuda")
    graphed = GraphedFuse(model, max_graphs=2)
    for b in (1, 2, 3, 1):  # buckets 1, 2, 4, then 1 again: dropped by then, captured anew
        inputs = fuse_inputs(b, 3, "cuda", seed=b)
        got = graphed(inputs).clone()
        with torch.inference_mode():
            want = torch.softmax(model.fuse(inputs), dim=-1)
        assert (got - want).abs().max() < TOL["cuda"]
    assert graphed.graph_count == 2 and graphed.captures == 4 and graphed.replays == 4
