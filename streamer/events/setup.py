"""The events of a node or supervisor: the labels that are announced, checked against the
model, and the tracker."""

from __future__ import annotations

import json
from pathlib import Path

from streamer.config import Config
from streamer.errors import ConfigError
from streamer.events.settings import EventsConfig
from streamer.events.tracker import EventTracker
from streamer.predictions import ModelId


def check_labels(cfg: EventsConfig, labels: tuple[str, ...], readout: str, name: str) -> None:
    """A listed label the model cannot give is a config error (a tagging model's tags are
    an open vocabulary: any name goes)."""
    if readout == "tags" or not isinstance(cfg.labels, list):
        return
    for i, label in enumerate(cfg.labels):
        if label not in labels:
            shown = ", ".join(labels[:20]) + (", …" if len(labels) > 20 else "")
            raise ConfigError(f"events.labels[{i}]", f"{label!r} is not a label of {name} "
                              f"({shown})")  # fmt: skip


def node_events(cfg: Config, model: ModelId, run: str) -> tuple[EventTracker | None, list[str]]:
    """The node's tracker (None: no ``events:``) and the labels it announces."""
    if cfg.events is None:
        return None, []
    check_labels(cfg.events, model.labels, model.readout, model.name)
    tracker = EventTracker(cfg.events, node=cfg.node, run=run)
    return tracker, cfg.events.announced(model.labels, model.readout)


def supervisor_event_labels(cfg: Config) -> list[str]:
    """The labels the ``--workers`` supervisor announces, without loading the model: the
    list, or the labels in the checkpoint's ``config.json`` (a preset: its own)."""
    if cfg.events is None:
        return []
    if isinstance(cfg.events.labels, list):
        return list(cfg.events.labels)
    from models.presets import PERCEPTION, preset_dir, preset_name

    preset = preset_name(cfg.model.checkpoint)
    if preset == PERCEPTION:
        return []  # tags: an open vocabulary
    directory = preset_dir(preset) if preset else cfg.model.checkpoint
    if directory is None:
        from models.checkpoint import default_checkpoint_dir

        directory = default_checkpoint_dir()
    config = json.loads((Path(directory) / "config.json").read_text())
    labels = tuple(str(x) for x in config["spec"]["labels"])
    return cfg.events.announced(labels, str(config.get("readout", "classes")))
