"""Switching the model of a running node: ``P/N/set/model`` with a checkpoint's path.

A message on ``P/N/set/model`` (UTF-8: the absolute path of a checkpoint directory on
the node's disk, or a preset's name: ``perception``, ``reference``) loads that
checkpoint beside the running model, off the event loop, and swaps it in between two
batches (:meth:`InferenceRunner.swap`): no window is lost and each stream's predictions
change ``model.version`` at one window boundary. A checkpoint that does not load, or
whose inputs differ from the running model's (frame size, frame rate, audio rate and
segment: the sources convert for those), is refused in one log line and the running
model goes on; the stats count both (``model``). Requests are taken one at a time, the
last one wins. Loading reads safetensors only (nothing is unpickled); who may publish
the topic is the broker's ACL to decide. The subscription is the node's control
connection (:class:`streamer.app.node_control.NodeControl`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from streamer.config import MODEL_PRESETS, Config
from streamer.errors import StreamerError
from streamer.inference.model import LoadedModel, load_model
from streamer.inference.runner import InferenceRunner

log = logging.getLogger(__name__)

MAX_PATH = 4096


def same_inputs(a: LoadedModel, b: LoadedModel) -> str | None:
    """Why ``b`` cannot take ``a``'s inputs, or None."""
    fields = ("image_size", "fps", "audio_rate", "audio_segment")
    diff = [f"{f} {getattr(b.spec, f)} (running {getattr(a.spec, f)})" for f in fields
            if getattr(a.spec, f) != getattr(b.spec, f)]  # fmt: skip
    return None if not diff else "its inputs differ: " + ", ".join(diff) + "; restart to switch"


class ModelSwitch:
    """Loads the checkpoints asked for and swaps them into ``runner``."""

    def __init__(self, cfg: Config, runner: InferenceRunner, current: LoadedModel) -> None:
        self.cfg = cfg
        self.runner = runner
        self.current = current
        self.switches = 0
        self.refused = 0
        self._lock = asyncio.Lock()
        self.decided = asyncio.Event()  # set after each request, switched or refused
        self.unsupported: str | None = None  # why no switch can happen here (refused)

    def counters(self) -> dict[str, Any]:
        mid = self.current.id
        return {"name": mid.name, "version": mid.version, "switches": self.switches,
                "refused": self.refused}  # fmt: skip

    async def request(self, payload: bytes) -> bool:
        """Switch to the checkpoint ``payload`` names; True when it runs now."""
        async with self._lock:
            try:
                if self.unsupported is not None:
                    raise StreamerError(self.unsupported)
                path = self._path(payload)
                loaded = await asyncio.to_thread(self._load, path)
                why = same_inputs(self.current, loaded)
                if why is not None:
                    raise StreamerError(why)
                fusion = await asyncio.to_thread(loaded.make_fusion)
            except (StreamerError, OSError, ValueError) as e:
                self.refused += 1
                log.error("model switch refused: %s", e)
                self.decided.set()
                return False
            self.runner.swap(fusion, loaded.spec, loaded.id)
            self.current = loaded
            self.switches += 1
            log.info("model switch: %s %s from %s, from the next batch on", loaded.id.name,
                     loaded.id.version[:19], path)  # fmt: skip
            self.decided.set()
            return True

    def _path(self, payload: bytes) -> Path:
        if len(payload) > MAX_PATH:
            raise ValueError(f"a path of {len(payload)} bytes is too long")
        text = payload.decode("utf-8", "strict").strip()
        path = Path(text)
        if not path.is_absolute() and text not in MODEL_PRESETS:
            raise ValueError(f"{text!r} is not an absolute path nor a preset's name")
        return path

    def _load(self, path: Path) -> LoadedModel:
        model_cfg = self.cfg.model.model_copy(update={"checkpoint": path})
        return load_model(model_cfg, self.cfg.window)
