"""Byte-level tokenizer: UTF-8 bytes shifted by one, 0 is padding; nothing to download.

Shapes: N texts, L = the longest encoded text in the batch (at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PAD = 0
VOCAB_SIZE = 257  # 256 byte values + padding


def encode(text: str, max_bytes: int) -> list[int]:
    """The token ids of ``text``: its UTF-8 bytes + 1, truncated to ``max_bytes`` bytes."""
    return [b + 1 for b in text.encode("utf-8")[:max_bytes]]


def batch_encode(texts: Sequence[str], max_bytes: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids int64 [N, L], lengths int64 [N])``; rows are right-padded with ``PAD``.

    An empty text has length 0 and a row of padding.
    """
    encoded = [encode(t, max_bytes) for t in texts]
    width = max([1, *(len(e) for e in encoded)])
    ids = torch.full((len(encoded), width), PAD, dtype=torch.int64)
    for row, e in enumerate(encoded):
        if e:
            ids[row, : len(e)] = torch.tensor(e, dtype=torch.int64)
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.int64)
    return ids, lengths
