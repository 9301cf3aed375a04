"""The encoder registry: ``(modality, name) -> builder``, so a model is assembled from names.

A checkpoint's ``config.json`` names each modality's encoder (``architecture.encoders``);
:class:`models.fusion.FusionModel` builds them here. Today's three encoders are
``builtin``; another encoder (pretrained, ONNX, ...) registers a builder under a new name
and nothing in fusion, the cache or the runtime changes.

A builder takes the :class:`ModelSpec` and the encoder's options (a JSON object from
``config.json``) and returns an ``nn.Module`` with the modality's call signature
(N items, D = ``spec.d_model``; items of a batch independent of each other):

=====  ===================================================  ==========
video  ``(frames uint8 [N, H, W, 3])``                      ``[N, D]``
audio  ``(wave float32 [N, S])``                            ``[N, D]``
text   ``(ids int64 [N, L], lengths int64 [N])``            ``[N, D]``
=====  ===================================================  ==========

Besides the registered names, any modality takes ``onnx:/abs/path/model.onnx``: a user's
ONNX graph described by a sidecar ``model.json`` (:mod:`models.encoders.onnx_file`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from models.encoders.audio import AudioEncoder
from models.encoders.onnx_file import PREFIX as ONNX_PREFIX
from models.encoders.onnx_file import build_onnx_encoder, onnx_path
from models.encoders.text import TextEncoder
from models.encoders.video import VideoEncoder
from models.spec import ModelSpec

__all__ = [
    "BUILTIN",
    "ONNX_PREFIX",
    "MODALITIES",
    "EncoderChoice",
    "UnknownEncoderError",
    "build_encoder",
    "check_encoder_name",
    "encoder_choices",
    "encoder_names",
    "register",
    "unregister",
]

MODALITIES = ("video", "audio", "text")
BUILTIN = "builtin"

Builder = Callable[[ModelSpec, Mapping[str, Any]], nn.Module]
_BUILDERS: dict[tuple[str, str], Builder] = {}


class UnknownEncoderError(ValueError):
    """A modality or encoder name the registry does not know; the message is one line."""


@dataclass(frozen=True)
class EncoderChoice:
    """Which encoder a modality uses: a registered name and its options."""

    name: str = BUILTIN
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise UnknownEncoderError(
            f"unknown modality {modality!r}; expected one of: {', '.join(MODALITIES)}"
        )


def register(modality: str, name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` as ``modality``'s encoder ``name`` (once)."""
    _check_modality(modality)

    def add(builder: Builder) -> Builder:
        if (modality, name) in _BUILDERS:
            raise ValueError(f"a {modality} encoder named {name!r} is already registered")
        _BUILDERS[(modality, name)] = builder
        return builder

    return add


def unregister(modality: str, name: str) -> None:
    """Take back ``modality``'s encoder ``name`` (a test's, a plugin's); absent: nothing."""
    _BUILDERS.pop((modality, name), None)


def encoder_names(modality: str) -> tuple[str, ...]:
    """The registered encoder names of ``modality``, sorted."""
    _check_modality(modality)
    return tuple(sorted(n for m, n in _BUILDERS if m == modality))


def check_encoder_name(modality: str, name: str) -> None:
    """``UnknownEncoderError`` (one line) unless ``name`` is a registered ``modality``
    encoder or ``onnx:`` and an absolute path (whether the file is there is the builder's
    to say)."""
    _check_modality(modality)
    if name.startswith(ONNX_PREFIX):
        try:
            onnx_path(name)
        except ValueError as e:
            raise UnknownEncoderError(str(e)) from e
    elif (modality, name) not in _BUILDERS:
        raise UnknownEncoderError(
            f"unknown {modality} encoder {name!r}; known: "
            f"{', '.join(encoder_names(modality))}, onnx:/abs/path/model.onnx"
        )


def build_encoder(modality: str, choice: EncoderChoice, spec: ModelSpec) -> nn.Module:
    """A new ``modality`` encoder as ``choice`` names it; ``UnknownEncoderError`` if unknown,
    ``OnnxEncoderError`` (a ``ProvenanceError``) for an unusable ``onnx:`` file."""
    check_encoder_name(modality, choice.name)
    if choice.name.startswith(ONNX_PREFIX):
        return build_onnx_encoder(modality, choice.name, spec, choice.options)
    return _BUILDERS[(modality, choice.name)](spec, choice.options)


def encoder_choices(
    given: Mapping[str, str | EncoderChoice] | None = None,
) -> dict[str, EncoderChoice]:
    """One choice per modality: ``given`` (a name or a choice each), ``builtin`` for the rest."""
    given = dict(given or {})
    for modality in given:
        _check_modality(modality)
    out: dict[str, EncoderChoice] = {}
    for modality in MODALITIES:
        choice = given.get(modality, EncoderChoice())
        out[modality] = EncoderChoice(choice) if isinstance(choice, str) else choice
    return out


def _no_options(modality: str, options: Mapping[str, Any]) -> None:
    if options:
        raise ValueError(
            f"the builtin {modality} encoder takes no options, got {', '.join(sorted(options))}"
        )


@register("video", BUILTIN)
def _builtin_video(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    _no_options("video", options)
    return VideoEncoder(spec.d_model)


@register("audio", BUILTIN)
def _builtin_audio(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    _no_options("audio", options)
    return AudioEncoder(spec.d_model, sample_rate=spec.audio_rate, n_mels=spec.n_mels)


@register("text", BUILTIN)
def _builtin_text(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    _no_options("text", options)
    return TextEncoder(spec.d_model)


# the pretrained encoders register here; their packages are imported only when built
import models.encoders.pretrained  # noqa: E402, F401
import models.encoders.speech  # noqa: E402, F401
