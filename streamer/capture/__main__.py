"""``python -m streamer.capture``: a capture process (see :mod:`streamer.capture.child`)."""

import sys

from streamer.capture.child import run_from_argv

run_from_argv(sys.argv[1:])
