"""What a WHIP offer must be before aiortc sees it, and a one-line reason when it is not.

aiortc's parser is lenient: an empty body, ``v=0`` or any text parses as a session with
no media, and a peer connection answers it with an empty answer that can never connect.
So an offer must be UTF-8, parse, have at least one media section, and carry at most
``MAX_CANDIDATES`` distinct ICE candidates: each one is an address the node would send
STUN checks to, so the offer must not be able to make it probe hundreds.
"""

from __future__ import annotations

from aiortc.sdp import SessionDescription

MAX_CANDIDATES = 32  # distinct (transport, address, port); a browser offers a handful


class BadOffer(ValueError):
    """The offer is refused; the message is the one-line reason for the 400."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    first = next(iter(str(e).splitlines()), "").strip()
    return (first or type(e).__name__)[:200]


def parse_offer(body: bytes, max_candidates: int = MAX_CANDIDATES) -> str:
    """The offer's SDP text; BadOffer with the reason when it cannot be answered."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadOffer(f"SDP offer is not UTF-8 (byte {e.start})") from None
    try:
        desc = SessionDescription.parse(text)
    except Exception as e:  # aiortc raises ValueError, AssertionError, IndexError...
        raise BadOffer(f"bad SDP offer: {one_line(e)}") from None
    if not desc.media:
        raise BadOffer("bad SDP offer: no media section (m=)")
    candidates = {
        ((c.protocol or "").lower(), c.ip, c.port) for m in desc.media for c in m.ice_candidates
    }
    if len(candidates) > max_candidates:
        raise BadOffer(
            f"SDP offer has {len(candidates)} ICE candidates, more than {max_candidates}"
        )
    return text
