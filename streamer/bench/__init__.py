"""``streamer bench``: the performance suite (see :mod:`streamer.bench.command`)."""
