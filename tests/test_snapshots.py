"""The snapshot ring: its bounds, its cadence, real JPEGs at the configured size (decoded
back with PyAV), the frame an event's peak picks, the MQTT outbox's coalescing and the
config's limits."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from streamer.config import Config, MqttConfig
from streamer.events.event import EventMessage
from streamer.frames import NS
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics
from streamer.snapshots.ring import SnapshotRing, scaled
from streamer.snapshots.settings import SnapshotsConfig
from streamer.snapshots.snapshots import EventSnapshots, SnapshotMessage, Snapshots

T0 = 1_700_000_000 * NS


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (320, 180)) -> av.VideoFrame:
    img = np.empty((size[1], size[0], 3), dtype=np.uint8)
    img[...] = rgb
    return av.VideoFrame.from_ndarray(img, format="rgb24")


def decode(jpeg: bytes) -> npt.NDArray[np.uint8]:
    frames = av.CodecContext.create("mjpeg", "r").decode(av.Packet(jpeg))
    assert len(frames) == 1
    f = frames[0]
    assert isinstance(f, av.VideoFrame)
    return f.to_ndarray(format="rgb24")


def ring(**kw: int | float) -> SnapshotRing:
    args: dict[str, int | float] = dict(fps=1.0, frames=10, width=0, quality=5,
                                        max_bytes=1 << 24)  # fmt: skip
    args.update(kw)
    return SnapshotRing("cam", **args)  # type: ignore[arg-type]


def test_a_snapshot_is_a_jpeg_at_the_configured_width() -> None:
    gx = np.linspace(0, 255, 1280, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(gx, (720, 1280, 3)).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    for width, want in [(640, (640, 360)), (0, (1280, 720)), (4000, (1280, 720))]:
        s = ring(width=width).offer(frame, T0)
        assert s is not None and s.jpeg[:2] == b"\xff\xd8" and s.jpeg[-2:] == b"\xff\xd9"
        out = decode(s.jpeg)
        assert (out.shape[1], out.shape[0]) == want == (s.width, s.height)
        # the picture survives: a horizontal gradient, dark left, bright right
        assert out[:, :10].mean() < 20 and out[:, -10:].mean() > 235
    assert scaled(641, 361, 320) == (320, 180)  # even, by aspect


def test_quality_is_the_quantiser_scale() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(noise, format="rgb24")
    sizes = []
    for q in (2, 10, 31):
        s = ring(quality=q).offer(frame, T0)
        assert s is not None
        sizes.append(len(s.jpeg))
    assert sizes[0] > sizes[1] > sizes[2], sizes


def test_the_ring_takes_at_most_fps_frames_a_second_of_event_time() -> None:
    r = ring(fps=2.0, frames=100)
    frame = solid((10, 20, 30))
    taken = [r.offer(frame, T0 + round(i * NS / 30)) is not None for i in range(90)]  # 3 s
    assert sum(taken) == 6 == r.taken
    assert taken[0] and taken[15] and not any(taken[1:15])  # one per half second
    # a reopened source whose clock restarted earlier is taken again at once
    assert r.offer(frame, T0 - NS) is not None


def test_the_ring_is_bounded_by_count_and_bytes() -> None:
    r = ring(frames=3)
    for i in range(5):
        r.offer(solid((i * 40, 0, 0)), T0 + i * NS)
    assert len(r) == 3 and r.evicted == 2 and r.taken == 5
    assert [s.pts_ns for s in r.items()] == [T0 + i * NS for i in (2, 3, 4)]
    assert r.bytes == sum(len(s.jpeg) for s in r.items())
    one = len(r.items()[0].jpeg)
    small = ring(frames=100, max_bytes=one * 2 + one // 2)
    for i in range(6):
        small.offer(solid((i * 40, 0, 0)), T0 + i * NS)
    assert len(small) == 2 and small.evicted == 4 and small.bytes <= small.max_bytes
    c = small.counters()
    assert c["taken"] == 6 and c["evicted"] == 4 and c["held"] == 2


def _event(peak_s: float, eid: str = "e1", stream: str = "cam") -> dict[str, object]:
    return {"id": eid, "stream": stream, "label": "dog", "peak_score": 0.9,
            "peak_time": peak_s}  # fmt: skip


def test_for_event_picks_the_frame_at_the_peak_not_the_one_before() -> None:
    """Red until 10 s, green from 10 s (the truth changes): a peak window (2 s) ending at
    12 s shows green; one ending at 10 s shows red (its frames are all before 10 s)."""
    snaps = Snapshots(SnapshotsConfig(fps=4.0, seconds=30.0, width=0), ["cam"], window_s=2.0)
    ring = snaps.ring("cam")
    assert ring is not None and snaps.ring("other") is None
    tap = ring.offer
    for i in range(4 * 20):  # 20 s at 4 fps from T0
        t = T0 + i * NS // 4
        tap(solid((220, 20, 20) if t < T0 + 10 * NS else (20, 220, 20)), t)
    t0 = T0 / NS
    green = snaps.for_event(_event(t0 + 12.0))
    red = snaps.for_event(_event(t0 + 10.0))
    assert green is not None and red is not None
    g, r = decode(green).mean(axis=(0, 1)), decode(red).mean(axis=(0, 1))
    assert g[1] > 200 and g[0] < 40, g
    assert r[0] > 200 and r[1] < 40, r
    # not covered (long before the ring, or a stream without one): None, counted
    assert snaps.for_event(_event(t0 - 60.0)) is None
    assert snaps.for_event(_event(t0 + 12.0, stream="other")) is None
    assert snaps.counts == {"found": 2, "missed": 2}
    assert snaps.latest("cam") is not None and snaps.latest("other") is None


def test_draw_writes_the_label_on_the_picture() -> None:
    cfg = SnapshotsConfig(width=0, draw=True)
    snaps = Snapshots(cfg, ["cam"], window_s=2.0)
    ring = snaps.ring("cam")
    assert ring is not None
    tap = ring.offer
    tap(solid((200, 200, 200)), T0)
    jpeg = snaps.for_event(_event(T0 / NS + 1.0))
    assert jpeg is not None
    img = decode(jpeg)
    assert img.shape == (180, 320, 3)
    assert img[:12, :60].min() < 50  # the dark box behind the text
    assert img[-40:, -40:].min() > 150  # the rest as it was


def test_event_snapshots_follow_new_and_a_moved_peak() -> None:
    snaps = Snapshots(SnapshotsConfig(fps=1.0, width=0), ["cam"], window_s=2.0)
    ring = snaps.ring("cam")
    assert ring is not None
    tap = ring.offer
    for i in range(10):
        tap(solid((i * 20, 0, 0)), T0 + i * NS)
    sent: list[SnapshotMessage] = []
    listener = EventSnapshots(snaps, sent.append)
    t0 = T0 / NS
    listener(EventMessage("new", _event(t0 + 3.0)))
    listener(EventMessage("update", _event(t0 + 3.0)))  # the same peak: nothing new
    listener(EventMessage("update", _event(t0 + 6.0)))
    listener(EventMessage("end", _event(t0 + 6.0)))
    assert [m.event_id for m in sent] == ["e1", "e1"]
    assert decode(sent[0].jpeg)[..., 0].mean() == pytest.approx(40, abs=6)  # pts 2 s
    assert decode(sent[1].jpeg)[..., 0].mean() == pytest.approx(100, abs=6)  # pts 5 s
    assert listener._sent == {}  # ended: forgotten


def test_an_unsent_snapshot_is_replaced_by_a_newer_one_in_the_outbox() -> None:
    pub = MqttPublisher(MqttConfig(), Topics("streamer", "n"), client_id="t")
    pub.set_retained("streamer/n/cam/snapshot", b"one", coalesce=True)
    pub.enqueue("streamer/n/cam/prediction", b"{}", 1)
    pub.set_retained("streamer/n/cam/snapshot", b"two", coalesce=True)
    pub.set_retained("streamer/n/cam/label", b"a", coalesce=False)
    pub.set_retained("streamer/n/cam/label", b"b", coalesce=False)
    assert pub.depth == 4 and pub.coalesced == 1
    box = pub._outbox.peek(4).messages
    assert [m.payload for m in box] == [b"two", b"{}", b"a", b"b"]
    # once sent (the drain loop is past it), a newer one queues behind instead
    pub._next_send = pub._outbox.end_seq
    pub.set_retained("streamer/n/cam/snapshot", b"three", coalesce=True)
    assert pub.depth == 5 and pub.coalesced == 1


def test_the_config_bounds_snapshots() -> None:
    base = {"streams": [{"id": "cam", "video": "synthetic:pattern"}]}
    assert Config.model_validate(base).snapshots == SnapshotsConfig()
    for bad in ({"fps": 0}, {"fps": 11}, {"seconds": 0}, {"quality": 1}, {"quality": 32},
                {"width": -1}, {"colour": 1}):  # fmt: skip
        with pytest.raises(ValidationError, match="snapshots"):
            Config.model_validate({**base, "snapshots": bad})
    assert SnapshotsConfig(fps=2.0, seconds=10.0).frames == 20
