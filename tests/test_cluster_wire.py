"""A shard sends each item to its runner once (streamer.cluster.wire): the runner's answers
are the same as with whole windows, a runner that lost its cache gets the windows again
whole, and a window in steady state fits Ray's inline limit."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from models.incremental import WindowInputs
from streamer.cluster.runner import RemoteFusion
from streamer.cluster.wire import Stripper, infer_named, unresolved
from streamer.config import ModelConfig, WindowConfig
from streamer.inference.model import load_model

INLINE_LIMIT = 100 * 1024  # Ray puts smaller objects inline, skipping the object store


def _windows(n: int, spec) -> list[WindowInputs]:  # type: ignore[no-untyped-def]
    """2 s windows every 0.5 s (the default): 8 frames and 8 audio segments each, 2 new."""
    rng = np.random.default_rng(0)
    size, seg = spec.image_size, spec.segment_samples
    frames = {k: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for k in range(2 * n + 8)}
    audio = {k: rng.standard_normal(seg).astype(np.float32) * 0.1 for k in range(2 * n + 8)}
    return [
        WindowInputs(
            session="cam",
            video=[(k, frames[k]) for k in range(2 * i, 2 * i + 8)],
            audio=[(k, audio[k]) for k in range(2 * i, 2 * i + 8)],
            text=[((i, "a 7"), "a 7", 0.5)] if i % 3 == 0 else [],
        )
        for i in range(n)
    ]


def test_items_once_give_the_same_answers_and_a_lost_cache_is_resent() -> None:
    loaded = load_model(ModelConfig(device="cpu"), WindowConfig())
    ref, runner = loaded.make_fusion(), loaded.make_fusion()
    windows = _windows(12, loaded.spec)
    expected = torch.cat([ref.infer([w])[0] for w in windows])
    remote = RemoteFusion(None, call=lambda ws: infer_named(runner, ws))
    got = [remote.infer([w])[0] for w in windows[:6]]
    got.append(remote.infer(windows[6:9])[0])  # one call: later windows name earlier items
    runner.drop_session("cam")  # the runner restarted: its cache is empty
    got.append(remote.infer(windows[9:])[0])
    torch.testing.assert_close(torch.cat(got), expected, atol=1e-5, rtol=1e-4)
    assert remote.resent == 3  # the three windows after the restart, once
    # each frame and segment stripped once it was sent: 24 keys in the first 9 windows,
    # 6 new in the last 3 (which then went whole, once)
    assert remote.wire.items_sent == 2 * 24 + 2 * 6
    assert remote.wire.items_named == 2 * (8 * 12) - remote.wire.items_sent


def test_a_window_in_steady_state_fits_rays_inline_limit() -> None:
    loaded = load_model(ModelConfig(device="cpu"), WindowConfig())
    windows = _windows(3, loaded.spec)
    wire = Stripper()
    whole = len(pickle.dumps(windows[1]))
    wire.strip(windows[0])
    steady = len(pickle.dumps(wire.strip(windows[1])))
    assert whole > INLINE_LIMIT > steady
    assert steady < whole / 3


def test_unresolved_follows_what_a_dropped_window_carried() -> None:
    w0 = WindowInputs("s", [(1, np.zeros(1))], [], [])
    w1 = WindowInputs("s", [(1, None), (2, np.zeros(1))], [], [])  # 1 from w0
    w2 = WindowInputs("s", [(2, None), (3, None)], [], [])  # 3 nowhere: unresolved
    w3 = WindowInputs("s", [(3, None)], [], [])
    assert unresolved([w0, w1], lambda *k: False) == []
    assert unresolved([w1], lambda *k: False) == [0]
    assert unresolved([w1], lambda s, m, k: k == 1) == []
    assert unresolved([w0, w1, w2, w3], lambda *k: False) == [2, 3]
    # w1 lacks 1 (not cached, w0 absent), so its payload of 2 is not inferred: w4 neither
    w4 = WindowInputs("s", [(2, None)], [], [])
    assert unresolved([w1, w4], lambda *k: False) == [0, 1]
