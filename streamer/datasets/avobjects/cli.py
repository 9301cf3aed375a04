"""``streamer dataset avobjects OUT --clips N --seed S [--per-class K]``."""

from __future__ import annotations

from pathlib import Path

from streamer.datasets.avobjects.generate import generate
from streamer.errors import ConfigError


def main_dataset(out: str, clips: int, seed: int, per_class: int) -> int:
    """Write the data set under ``out``; print a short summary; return the exit code.

    Raises ConfigError for bad arguments, EspeakMissing / EmojiFontMissing /
    PicturesMissing (StreamerErrors) when a tool, the font or a package is missing; all
    print as one line.
    """
    if not out:
        raise ConfigError("out", "an output folder is required")
    if seed < 0:
        raise ConfigError("seed", f"must be >= 0, got {seed}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder")
    summary = generate(path, clips=clips, per_class=per_class, seed=seed)
    for line in summary.lines():
        print(line)
    return 0
