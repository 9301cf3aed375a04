"""PyAV URLs and errors: which schemes AVSource reads, the FFmpeg options a camera or
network URL turns into, and one line for what PyAV raises."""

from __future__ import annotations

import errno
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlparse, urlunparse

import av

from streamer.errors import SourcePermanentError

NETWORK_SCHEMES = ("udp", "rtsp", "http", "https", "srt")
SCHEMES = ("file", "v4l2", *NETWORK_SCHEMES)
V4L2_PARAMS = {"size": "video_size", "fps": "framerate", "input_format": "input_format"}
AV_ERRORS: tuple[type[BaseException], ...] = (
    av.error.FFmpegError,
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
)
"""What PyAV raises on bad input: InvalidDataError, OSError, EOFError, FFmpegError..."""


_SIZE_RE = re.compile(r"([0-9]{1,6})x([0-9]{1,6})")
PERMANENT_ERRNOS = (errno.EACCES, errno.EPERM)


def _short(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def file_path(url: str) -> str:
    """The path of a ``file:///abs/clip.mp4`` URL; SourcePermanentError for options,
    which a file URL has none of (``realtime`` and ``loop`` are keys of the stream)."""
    u = urlparse(url)
    if u.query or u.fragment:
        extra = u.query or u.fragment
        raise SourcePermanentError(
            url,
            f"file:// URLs take no options, got {_short(extra)} "
            "(realtime and loop are keys of the stream; write a '?' in a path as %3F)",
        )
    return unquote(u.path)


def check_readable(url: str, path: str) -> None:
    """SourcePermanentError when ``path`` cannot be opened for lack of permission."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        if e.errno in PERMANENT_ERRNOS:
            raise SourcePermanentError(url, f"permission denied: {path}") from None


def permanent(e: BaseException) -> bool:
    """Whether a PyAV/OS error on open is one that retrying cannot cure."""
    if isinstance(e, OSError) and e.errno in PERMANENT_ERRNOS:
        return True
    return isinstance(e, av.error.ProtocolNotFoundError)


def _us(seconds: float) -> str:
    return str(round(seconds * 1_000_000))


def v4l2_options(url: str) -> tuple[str, dict[str, str]]:
    """``v4l2:///dev/video0?size=640x480&fps=30&input_format=mjpeg`` -> (device, options).

    Raises SourcePermanentError for an unknown or malformed query parameter.
    """
    u = urlparse(url)
    if u.scheme != "v4l2" or not u.path.startswith("/dev/"):
        raise SourcePermanentError(url, "expected v4l2:///dev/videoN")
    options: dict[str, str] = {}
    for key, value in parse_qsl(u.query, keep_blank_values=True):
        if key not in V4L2_PARAMS:
            known = ", ".join(V4L2_PARAMS)
            raise SourcePermanentError(url, f"unknown option {_short(key)} (known: {known})")
        if key == "size":
            m = _SIZE_RE.fullmatch(value)
            if m is None or int(m[1]) == 0 or int(m[2]) == 0:
                problem = f"size must be WIDTHxHEIGHT, got {_short(value)}"
                raise SourcePermanentError(url, problem)
        elif key == "fps":
            try:
                ok = float(value) > 0
            except ValueError:
                ok = False
            if not ok:
                problem = f"fps must be a positive number, got {_short(value)}"
                raise SourcePermanentError(url, problem)
        elif not value:
            raise SourcePermanentError(url, f"{key} needs a value")
        options[V4L2_PARAMS[key]] = value
    return unquote(u.path), options


def network_options(url: str, read_timeout: float) -> tuple[str, str | None, dict[str, str]]:
    """(target URL, demuxer format or None, PyAV options) for a network URL.

    Timeouts are in MICROSECONDS. udp: MPEG-TS unless the query names ``format=`` (taken
    out of the URL), a large FIFO that survives overruns; rtsp: interleaved over TCP.
    """
    u = urlparse(url)
    query = parse_qsl(u.query, keep_blank_values=True)
    fmt: str | None = None
    target = url  # passed on untouched, except udp's own format= parameter
    if u.scheme == "udp" and any(k == "format" for k, _ in query):
        fmt = next(v for k, v in query if k == "format")
        rest = [(k, v) for k, v in query if k != "format"]
        target = urlunparse(u._replace(query=urlencode(rest)))
    options = {"timeout": _us(read_timeout)}
    if u.scheme == "udp":
        fmt = fmt or "mpegts"
        options |= {"fifo_size": "1000000", "overrun_nonfatal": "1"}
    elif u.scheme == "rtsp":
        options |= {"rtsp_transport": "tcp"}
    return target, fmt, options


def describe_av_error(e: BaseException, *, timeout: float | None = None) -> str:
    """One line for a PyAV/FFmpeg exception, without the file name (the URL says it)."""
    if isinstance(e, av.error.ExitError):
        return f"no data within {timeout} s" if timeout is not None else "interrupted"
    if isinstance(e, FileNotFoundError):
        return "no such file or device"
    if isinstance(e, av.error.InvalidDataError):
        return "not a readable media stream (invalid data)"
    if isinstance(e, av.error.ProtocolNotFoundError):
        return "protocol not supported by this FFmpeg build"
    if isinstance(e, av.error.FFmpegError):
        text = e.strerror or str(e)
    elif isinstance(e, OSError) and e.strerror:
        text = e.strerror
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())[:200]
