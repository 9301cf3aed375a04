"""A user's ONNX file as a frozen backbone: ``onnx:/abs/path/model.onnx`` with ``model.json``.

N items; the modality's inputs are those of :mod:`models.encoders.registry` (video uint8
``[N, H, W, 3]``, audio float32 ``[N, S]`` at ``spec.audio_rate``, text ids int64
``[N, L]`` = UTF-8 bytes + 1, 0-padded). The sidecar ``model.json`` beside the ``.onnx``
says how to turn them into the graph's input and which output is the embedding::

    {"modality": "video", "licence": "MIT",
     "input": {"name": "images", "size": [224, 224], "layout": "NCHW", "dtype": "float32",
               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 255},
     "output": {"name": "embedding", "dim": 512}}
    {"modality": "audio", "input": {"name": "waveform", "sample_rate": 16000, "window": 15600},
     "output": {"name": "embedding", "dim": 1024}}
    {"modality": "text", "input": {"name": "ids", "max_len": 256, "lengths": "lengths"},
     "output": {"name": "embedding", "dim": 64}}

Video frames are resized (bilinear) to ``size``; float32 input is ``(x / scale - mean) /
std``, uint8 input is the resized pixels. Audio is resampled (linear) to ``sample_rate``,
then its last ``window`` samples are kept (a shorter segment is zero-padded at the end).
Text is the project's byte ids (UTF-8 bytes + 1, 0 = padding) cut or padded to ``max_len``,
with their lengths as a second input if ``lengths`` names one. The output is pooled to
``[N, dim]``: ``[N, dim]`` as is, ``[N, T, dim]`` averaged over T, ``[N, dim, H, W]``
averaged over H and W. A graph whose batch axis is dynamic runs on the whole batch; one
with a fixed batch of 1, or without a batch axis, runs item by item.

The checkpoint records the path and one sha256 over the ``.onnx`` file's digest and the
validated sidecar (:func:`onnx_digest`), so another graph or another sidecar is refused at
load. ``onnxruntime`` (``pip install 'streamer[onnx]'``) is imported when one is built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.encoders.frozen import FrozenEncoder, Provenance, ProvenanceError, file_sha256
from models.spec import ModelSpec

__all__ = ["PREFIX", "OnnxEncoderError", "build_onnx_encoder", "onnx_digest", "read_sidecar"]

PREFIX = "onnx:"
SIDECAR = "model.json"
Positive = Annotated[int, Field(ge=1)]


class OnnxEncoderError(ProvenanceError):
    """An ``onnx:`` encoder whose path, file, sidecar or graph is unusable (one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VideoInput(_Strict):
    name: str
    size: tuple[Positive, Positive]  # [H, W]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "uint8"] = "float32"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = Field(255.0, gt=0)

    @model_validator(mode="after")
    def _float_only(self) -> VideoInput:
        given = sorted({"mean", "std", "scale"} & self.model_fields_set)
        if self.dtype == "uint8" and given:
            raise ValueError(f"{', '.join(given)} apply to float32 input only")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not be 0")
        return self


class AudioInput(_Strict):
    name: str
    sample_rate: Positive
    window: Positive  # samples


class TextInput(_Strict):
    name: str
    kind: Literal["utf8-bytes"] = "utf8-bytes"  # ids = UTF-8 byte + 1, 0 = padding
    max_len: Positive
    lengths: str | None = None  # the name of an int64 [N] lengths input, if the graph has one


class Output(_Strict):
    name: str
    dim: Positive


class _Sidecar(_Strict):
    licence: str = "unknown"
    output: Output


class VideoSidecar(_Sidecar):
    modality: Literal["video"]
    input: VideoInput


class AudioSidecar(_Sidecar):
    modality: Literal["audio"]
    input: AudioInput


class TextSidecar(_Sidecar):
    modality: Literal["text"]
    input: TextInput


Sidecar = VideoSidecar | AudioSidecar | TextSidecar
_SIDECARS: dict[str, type[_Sidecar]] = {
    "video": VideoSidecar,
    "audio": AudioSidecar,
    "text": TextSidecar,
}
_RANK = {"video": 4, "audio": 2, "text": 2}  # the graph input's rank with a batch axis


def _first(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def onnx_path(name: str) -> Path:
    """The absolute path of ``onnx:<path>``; ``OnnxEncoderError`` for a relative one."""
    raw = name.removeprefix(PREFIX)
    path = Path(raw)
    if not raw or not path.is_absolute():
        raise OnnxEncoderError(f"encoder {name!r}: the path after 'onnx:' must be absolute")
    return path


def read_sidecar(modality: str, path: Path) -> Sidecar:
    """``model.json`` beside ``path``, validated for ``modality``; one-line errors naming
    the file and the field."""
    file = path.with_name(SIDECAR)
    if not file.is_file():
        raise OnnxEncoderError(f"{path}: no sidecar {file} (it describes input and output)")
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OnnxEncoderError(f"{file}: not valid JSON ({_first(e)})") from e
    if not isinstance(raw, dict):
        raise OnnxEncoderError(f"{file}: expected a JSON object")
    if raw.get("modality") != modality:
        raise OnnxEncoderError(
            f"{file}: modality is {raw.get('modality')!r}, used as a {modality} encoder"
        )
    try:
        sidecar = _SIDECARS[modality].model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise OnnxEncoderError(f"{file}: {where}: {err['msg']}") from e
    assert isinstance(sidecar, VideoSidecar | AudioSidecar | TextSidecar)
    return sidecar


def onnx_digest(path: Path, sidecar: Sidecar) -> str:
    """sha256 of (the ``.onnx`` file's sha256, the sidecar as canonical JSON)."""
    canonical = json.dumps(sidecar.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(f"{file_sha256(path)}\n{canonical}".encode()).hexdigest()


def _session(path: Path) -> Any:
    try:
        import onnxruntime as ort  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError as e:
        raise OnnxEncoderError(
            f"onnx encoder {path} needs onnxruntime: pip install 'streamer[onnx]'"
        ) from e
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1  # model.threads' default: one per stream worker
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own types for a bad model
        raise OnnxEncoderError(f"{path}: onnxruntime cannot load it ({_first(e)})") from e


class OnnxBackbone:
    """The modality's inputs -> the graph's pooled output ``float32 [N, dim]`` (on the
    inputs' device; the graph itself runs on the CPU)."""

    def __init__(self, modality: str, path: Path, sidecar: Sidecar, spec: ModelSpec) -> None:
        self.modality, self.path, self.sidecar, self.spec = modality, path, sidecar, spec
        self.session = _session(path)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self._names = [sidecar.input.name]
        if isinstance(sidecar.input, TextInput) and sidecar.input.lengths:
            self._names.append(sidecar.input.lengths)
        for field, name in zip(("input.name", "input.lengths"), self._names, strict=False):
            if name not in inputs:
                raise OnnxEncoderError(
                    f"{path.with_name(SIDECAR)}: {field} {name!r} is not an input of the "
                    f"graph (inputs: {', '.join(inputs)})"
                )
        if sidecar.output.name not in outputs:
            raise OnnxEncoderError(
                f"{path.with_name(SIDECAR)}: output.name {sidecar.output.name!r} is not an "
                f"output of the graph (outputs: {', '.join(outputs)})"
            )
        shape = list(inputs[sidecar.input.name].shape)
        rank = _RANK[modality]
        if len(shape) == rank - 1:  # no batch axis: one item at a time, unbatched
            self.batched, self.per_item = False, True
        elif len(shape) == rank and isinstance(shape[0], int) and shape[0] >= 1:
            if shape[0] != 1:
                raise OnnxEncoderError(
                    f"{path}: the batch axis of {sidecar.input.name!r} is fixed at {shape[0]}; "
                    "export it dynamic or 1"
                )
            self.batched, self.per_item = True, True
        elif len(shape) == rank:
            self.batched, self.per_item = True, False
        else:
            raise OnnxEncoderError(
                f"{path}: input {sidecar.input.name!r} has shape {shape}, expected rank {rank} "
                f"(or {rank - 1} without a batch axis) for {modality}"
            )
        self.dim = sidecar.output.dim
        self(*_dummy(modality, spec))  # the graph takes its input and gives [.., dim]

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxBackbone:
        return self  # frozen and stateless: a copied model shares it

    def _feeds(self, *inputs: torch.Tensor) -> list[npt.NDArray[Any]]:
        inp = self.sidecar.input
        if isinstance(inp, VideoInput):
            return [_video(inputs[0], inp)]
        if isinstance(inp, AudioInput):
            return [_audio(inputs[0], inp, self.spec.audio_rate)]
        return _text(inputs[0], inputs[1], inp)[: len(self._names)]  # lengths if named

    def _run(self, feeds: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
        feed = dict(zip(self._names, feeds, strict=True))
        try:
            out = self.session.run([self.sidecar.output.name], feed)
        except Exception as e:  # onnxruntime's own error types
            raise OnnxEncoderError(f"{self.path}: the graph refused its input ({_first(e)})") from e
        return np.asarray(out[0])

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        # traced (streamer export, model.runtime: onnx), its output would become a constant
        if torch.jit.is_tracing():  # type: ignore[attr-defined, no-untyped-call]
            raise OnnxEncoderError(
                f"{self.path}: a model with an onnx: encoder cannot be exported or traced"
            )
        device = inputs[0].device
        feeds = self._feeds(*(x.detach().cpu() for x in inputs))
        if not self.per_item:
            out = self._run(feeds)
        else:
            items = []
            for i in range(feeds[0].shape[0]):
                one = [f[i : i + 1] if self.batched else f[i] for f in feeds]
                got = self._run(one)
                items.append(got if self.batched else got[None])
            out = np.concatenate(items) if items else np.zeros((0, self.dim), np.float32)
        return torch.from_numpy(self._pool(out)).to(device)

    def _pool(self, out: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        d = self.dim
        if out.ndim == 2 and out.shape[1] == d:
            pooled = out
        elif out.ndim == 3 and out.shape[2] == d:  # [N, T, dim]
            pooled = out.mean(axis=1)
        elif out.ndim == 4 and out.shape[1] == d:  # [N, dim, H, W]
            pooled = out.mean(axis=(2, 3))
        else:
            raise OnnxEncoderError(
                f"{self.path.with_name(SIDECAR)}: output.dim is {d} but output "
                f"{self.sidecar.output.name!r} has shape {list(out.shape)} (expected [N, {d}], "
                f"[N, T, {d}] or [N, {d}, H, W])"
            )
        return np.ascontiguousarray(pooled, dtype=np.float32)


def _dummy(modality: str, spec: ModelSpec) -> tuple[torch.Tensor, ...]:
    if modality == "video":
        return (torch.zeros(1, spec.image_size, spec.image_size, 3, dtype=torch.uint8),)
    if modality == "audio":
        return (torch.zeros(1, spec.segment_samples),)
    return torch.ones(1, 1, dtype=torch.int64), torch.ones(1, dtype=torch.int64)


def _video(frames: torch.Tensor, inp: VideoInput) -> npt.NDArray[Any]:
    x = frames.permute(0, 3, 1, 2).float()  # [N, 3, H, W], 0..255
    if tuple(x.shape[2:]) != inp.size:
        x = F.interpolate(x, size=inp.size, mode="bilinear", align_corners=False)
    if inp.dtype == "uint8":
        x = x.round().clamp(0, 255).to(torch.uint8)
    else:
        mean = torch.tensor(inp.mean).view(1, 3, 1, 1)
        std = torch.tensor(inp.std).view(1, 3, 1, 1)
        x = (x / inp.scale - mean) / std
    if inp.layout == "NHWC":
        x = x.permute(0, 2, 3, 1)
    return np.ascontiguousarray(x.numpy())


def _audio(wave: torch.Tensor, inp: AudioInput, rate: int) -> npt.NDArray[np.float32]:
    x = wave.float()  # [N, S]
    if inp.sample_rate != rate and x.shape[1] > 0:
        n = max(1, round(x.shape[1] * inp.sample_rate / rate))
        x = F.interpolate(x[:, None], size=n, mode="linear", align_corners=False)[:, 0]
    if x.shape[1] >= inp.window:
        x = x[:, x.shape[1] - inp.window :]  # the most recent samples
    else:
        x = F.pad(x, (0, inp.window - x.shape[1]))
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def _text(ids: torch.Tensor, lengths: torch.Tensor, inp: TextInput) -> list[npt.NDArray[Any]]:
    x = ids.long()[:, : inp.max_len]  # [N, L] bytes + 1, 0-padded
    x = F.pad(x, (0, inp.max_len - x.shape[1]))
    n = lengths.long().clamp(0, inp.max_len)
    return [np.ascontiguousarray(x.numpy()), np.ascontiguousarray(n.numpy())]


def build_onnx_encoder(
    modality: str, name: str, spec: ModelSpec, options: Mapping[str, Any]
) -> FrozenEncoder:
    """The ``onnx:<path>`` encoder of ``modality``: the graph, frozen, then a projection."""
    if options:
        raise OnnxEncoderError(
            f"encoder {name!r} takes no options (its sidecar {SIDECAR} describes it), got "
            f"{', '.join(sorted(options))}"
        )
    path = onnx_path(name)
    if not path.is_file():
        raise OnnxEncoderError(f"encoder {name!r}: {path} is not a file")
    sidecar = read_sidecar(modality, path)
    prov = Provenance(
        name=name, file=str(path), sha256=onnx_digest(path, sidecar), licence=sidecar.licence
    )
    backbone = OnnxBackbone(modality, path, sidecar, spec)
    return FrozenEncoder(backbone, dim=sidecar.output.dim, d_model=spec.d_model, provenance=prov)
