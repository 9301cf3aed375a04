"""``streamer dataset avdigits OUT [--clips N] [--seed S]``: write the data set, summarise."""

from __future__ import annotations

from streamer.datasets.avdigits.generate import generate
from streamer.datasets.common.media import output_folder


def main_dataset(out: str, clips: int, seed: int) -> int:
    """Write ``clips`` clips under ``out``; print a short summary; return the exit code.

    Raises ConfigError for bad arguments and EspeakMissing (a StreamerError) when
    espeak-ng is not installed; both print as one line.
    """
    path = output_folder(out, seed)
    summary = generate(path, clips=clips, seed=seed)
    for line in summary.lines():
        print(line)
    return 0
