"""Per-modality encoders: one item (frame, audio segment, text event) -> one ``[D]`` vector.

Each encoder treats the items of a batch independently (no batch statistics), so an item's
embedding does not depend on what it was batched with; incremental inference relies on it.
:mod:`models.encoders.registry` builds them by ``(modality, name)``.
"""

# the registry first (it imports the pretrained, then the speech encoders): one import
# order, whichever module of the package is imported first
import models.encoders.registry  # noqa: F401
from models.encoders.audio import AudioEncoder
from models.encoders.text import TextEncoder
from models.encoders.video import VideoEncoder

__all__ = ["AudioEncoder", "TextEncoder", "VideoEncoder"]
