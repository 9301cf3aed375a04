"""``streamer dataset avobjects OUT --clips N --seed S [--per-class K]``."""

from __future__ import annotations

from streamer.datasets.avobjects.generate import generate
from streamer.datasets.common.media import output_folder


def main_dataset(out: str, clips: int, seed: int, per_class: int) -> int:
    """Write the data set under ``out``; print a short summary; return the exit code.

    Raises ConfigError for bad arguments, EspeakMissing / EmojiFontMissing /
    PicturesMissing (StreamerErrors) when a tool, the font or a package is missing; all
    print as one line.
    """
    path = output_folder(out, seed)
    summary = generate(path, clips=clips, per_class=per_class, seed=seed)
    for line in summary.lines():
        print(line)
    return 0
