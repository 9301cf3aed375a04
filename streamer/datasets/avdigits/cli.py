"""``streamer dataset avdigits OUT [--clips N] [--seed S]``: write the data set, summarise."""

from __future__ import annotations

from pathlib import Path

from streamer.datasets.avdigits.generate import generate
from streamer.errors import ConfigError


def main_dataset(out: str, clips: int, seed: int) -> int:
    """Write ``clips`` clips under ``out``; print a short summary; return the exit code.

    Raises ConfigError for bad arguments and EspeakMissing (a StreamerError) when
    espeak-ng is not installed; both print as one line.
    """
    if not out:
        raise ConfigError("out", "an output folder is required")
    if seed < 0:
        raise ConfigError("seed", f"must be >= 0, got {seed}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder")
    summary = generate(path, clips=clips, seed=seed)
    for line in summary.lines():
        print(line)
    return 0
