"""Errors raised by streamer.

    StreamerError                 root; ``str(e)`` is one line meant for the user
    ├── ConfigError               a bad config or argument (exit 2); ``field`` names it
    ├── SourceError               a source failed; ``url`` names it
    │   └── SourceOpenError       it could not be opened at all
    │       └── SourcePermanentError  nor will it be by retrying: a missing package,
    │                                 an unsupported option, permission denied
    ├── SourceEnded               a finite source reached its end (not a failure)
    ├── RejectedInput             a malformed input item, counted and dropped; ``kind``
    ├── CheckpointError           a checkpoint is missing or malformed
    └── BrokerError               the MQTT broker could not be used
"""

from __future__ import annotations


class StreamerError(Exception):
    """Root of streamer's errors. The message is one line, fit for a user."""


class ConfigError(StreamerError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class SourceError(StreamerError):
    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"{url}: {problem}")
        self.url = url
        self.problem = problem


class SourceOpenError(SourceError):
    pass


class SourcePermanentError(SourceOpenError):
    """Opening failed for a reason that retrying cannot cure (a missing package, an
    unsupported URL option, permission denied): the stream worker reports it once and
    does not reopen; ``streamer run`` and ``check`` report it at start, naming the field."""


class SourceEnded(StreamerError):
    """Raised by ``Source.recv()`` when a finite source has no more items."""


class RejectedInput(StreamerError):
    """A malformed input; ``kind`` is a short counter name (``oversized``, ``not_utf8``...)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class CheckpointError(StreamerError):
    pass


class BrokerError(StreamerError):
    pass
