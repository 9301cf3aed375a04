"""Export a checkpoint as four graphs: three encoders and the fusion step, ONNX or TorchScript.

Shapes: N items, H x W x 3 frames, S = ``spec.segment_samples``, L text bytes, B windows,
Tv / Ta / Tt slots per window, D = ``spec.d_model``, C = ``len(spec.labels)``.

==============  ==========================================================  ================
graph           inputs                                                      outputs
==============  ==========================================================  ================
video_encoder   frames uint8 [N, H, W, 3]                                   embedding [N, D]
audio_encoder   wave float32 [N, S]                                         embedding [N, D]
text_encoder    ids int64 [N, L], lengths int64 [N]                         embedding [N, D]
fuse            video_emb float32 [B, Tv, D], video_mask bool [B, Tv],      logits [B, C],
                audio_emb [B, Ta, D], audio_mask bool [B, Ta],              probs [B, C]
                text_emb [B, Tt, D], text_mask bool [B, Tt],
                text_pos_s float32 [B, Tt]
==============  ==========================================================  ================

Every axis named by a letter above is dynamic (N >= 1 for the encoders; H, W are dynamic
too for ONNX). Next to the graphs, ``export.json`` records the spec, the checkpoint's name
and version, the format and the file names; it is written last, so a directory with a
manifest is a complete export. Export is offline and deterministic: the same checkpoint
gives the same files. A pretrained backbone that runs outside torch or tags is not in its
encoder's graph, which then takes its ``features`` (:mod:`models.export_backbones`); the
graphs themselves are in :mod:`models.export_graphs`.

ONNX uses torch's TorchScript-based exporter (``dynamo=False``, opset 17), which needs the
``onnx`` package but not ``onnxscript``; TorchScript uses ``torch.jit.trace`` and saves
``.pt`` archives that ``torch.jit.load`` reads without this package.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.jit._trace import TracerWarning

from models.checkpoint import default_checkpoint_dir, load_checkpoint
from models.encoders.frozen import FrozenEncoder
from models.export_backbones import (
    ProjectionGraph,
    backbone_records,
    hosted,
    projection_io,
)
from models.export_graphs import (
    DYNAMIC_AXES,
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    example_inputs,
    fuse_graph_inputs,
    graphs,
)
from models.fusion import FusionModel

__all__ = [
    "FORMATS",
    "GRAPHS",
    "MANIFEST",
    "ExportError",
    "default_export_dir",
    "example_inputs",
    "export",
    "export_model",
    "fuse_graph_inputs",
    "graphs",
    "is_exported",
    "read_manifest",
]

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[Format, ...] = ("onnx", "torchscript")
GRAPHS = ("video_encoder", "audio_encoder", "text_encoder", "fuse")
MANIFEST = "export.json"
MANIFEST_FORMAT = "streamer.export/1"
OPSET = 17
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportError(ValueError):
    """A bad format, an unwritable directory or an unreadable export; one-line message."""


# -- the graphs: thin modules over FusionModel's own code --------------------------------------


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence the tracers' notices about the encoders' Python-side input checks (they are
    constant for valid inputs), the exporter's deprecation notices, its note that a reversed
    slice (reflect padding) is not constant-folded, and its caution about GRUs traced at a
    batch size other than 1 (their initial state is zeros, not a traced constant; the tests
    run every graph at several batch sizes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_", UserWarning)
        yield


def _write_atomic(path: Path, write: Any) -> None:
    """``write(tmp_path)``, then rename onto ``path``: no half-written file is ever visible."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _export_onnx(
    name: str,
    graph: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    io: dict[str, Any] | None = None,
) -> None:
    """``io``: the input and output names and dynamic axes, when not the graph's own
    (a projection graph, :mod:`models.export_backbones`)."""

    def write(tmp: str) -> None:
        torch.onnx.export(
            graph,
            args,
            tmp,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(io["inputs"] if io else GRAPH_INPUTS[name]),
            output_names=list(io["outputs"] if io else GRAPH_OUTPUTS[name]),
            dynamic_axes=io["dynamic"] if io else DYNAMIC_AXES[name],
            do_constant_folding=True,
        )

    _write_atomic(path, write)


def export_graph(model: FusionModel, graph_name: str, path: str | Path) -> Path:
    """One of the four graphs of ``model`` (CPU, eval mode) to an ONNX file at ``path``,
    traced with :func:`example_inputs`; ``ExportError`` when its encoder runs outside torch."""
    _check_exportable(
        model, tuple(m for m in ("video", "audio", "text") if graph_name == f"{m}_encoder")
    )
    with quiet_tracing():
        _export_onnx(graph_name, graphs(model)[graph_name],
                     example_inputs(model.spec)[graph_name], Path(path))  # fmt: skip
    return Path(path)


def _export_torchscript(
    name: str, graph: nn.Module, args: tuple[torch.Tensor, ...], path: Path
) -> None:
    traced = torch.jit.trace(graph, args, check_trace=False)  # type: ignore[no-untyped-call]
    _write_atomic(path, lambda tmp: torch.jit.save(traced, tmp))


def _check_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    return fmt


def _check_exportable(
    model: FusionModel, modalities: tuple[str, ...] = ("video", "audio", "text")
) -> None:
    """An encoder whose backbone runs outside torch (silero-vad, wordllama, an ``onnx:``
    file) cannot be traced: TorchScript and a single encoder graph refuse it."""
    for modality in modalities:
        enc = model.encoder(modality)
        if isinstance(enc, FrozenEncoder) and not isinstance(enc.backbone, nn.Module):
            raise ExportError(
                f"the {modality} encoder {enc.provenance.name!r} runs outside torch: it is "
                "not traced into a graph (--format onnx exports its projection alone)"
            )


def export_model(
    model: FusionModel,
    fmt: str,
    out_dir: str | Path,
    *,
    name: str | None = None,
    version: str = "unversioned",
) -> list[Path]:
    """Write the four graphs of ``model`` and ``export.json`` to ``out_dir``; their paths.

    The model is exported from CPU in eval mode (it is not moved or changed: a CPU copy is
    traced when it lives elsewhere). ``ExportError`` on a bad format or directory. An
    encoder whose backbone runs outside torch goes into an ONNX export as its projection
    alone (:mod:`models.export_backbones`); TorchScript refuses it.
    """
    kind = _check_format(fmt)
    if kind != "onnx":
        _check_exportable(model)
    if kind == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ExportError("exporting to onnx needs the onnx package (pip install onnx)")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create export directory {out}: {e.strerror or e}") from e
    params = list(model.parameters())
    if (params and params[0].device.type != "cpu") or model.training:
        model = copy.deepcopy(model).cpu()
    model = model.eval()
    spec = model.spec
    inputs = example_inputs(spec)
    # ONNX: the backbones left to the runtime (TorchScript refused those outside torch)
    host = hosted(model) if kind == "onnx" else {}
    io = {f"{m}_encoder": projection_io(enc) for m, enc in host.items()}
    (manifest_path := out / MANIFEST).unlink(missing_ok=True)  # incomplete until rewritten
    files: dict[str, str] = {}
    written: list[Path] = []
    try:
        with quiet_tracing():
            for graph_name, graph in graphs(model).items():
                path = out / f"{graph_name}{_SUFFIX[kind]}"
                if graph_name in io:
                    modality = graph_name.removesuffix("_encoder")
                    projection = ProjectionGraph(host[modality]).eval()
                    _export_onnx(graph_name, projection, io[graph_name]["example"], path,
                                 io[graph_name])  # fmt: skip
                elif kind == "onnx":
                    _export_onnx(graph_name, graph, inputs[graph_name], path)
                else:
                    _export_torchscript(graph_name, graph, inputs[graph_name], path)
                files[graph_name] = path.name
                written.append(path)
    except OSError as e:
        raise ExportError(f"cannot write export to {out}: {e.strerror or e}") from e
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "runtime": kind,
        "opset": OPSET if kind == "onnx" else None,
        "torch": torch.__version__,
        "checkpoint": {"name": name or spec.name, "version": version},
        "spec": spec.to_dict(),
        "files": files,
        "inputs": {g: list(io[g]["inputs"] if g in io else v) for g, v in GRAPH_INPUTS.items()},
        "outputs": {g: list(v) for g, v in GRAPH_OUTPUTS.items()},
        "dynamic_axes": {g: io[g]["dynamic"] if g in io else v for g, v in DYNAMIC_AXES.items()},
    }
    if host:
        manifest["backbones"] = backbone_records(model)
    text = json.dumps(manifest, indent=2) + "\n"
    _write_atomic(manifest_path, lambda tmp: Path(tmp).write_text(text))
    return [*written, manifest_path]


def default_export_dir(version: str, fmt: str) -> Path:
    """Where an export of checkpoint ``version`` is cached when no directory is given:
    ``$XDG_CACHE_HOME/streamer/<fmt>/<digest>`` (``~/.cache`` by default)."""
    kind = _check_format(fmt)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = version.split(":", 1)[-1][:32] or "unversioned"
    return root / "streamer" / kind / digest


def export(
    checkpoint_dir: str | Path | None, fmt: str, out_dir: str | Path | None = None
) -> list[Path]:
    """Export a checkpoint directory (``None``: the shipped one) as ``fmt`` to ``out_dir``
    (``None``: :func:`default_export_dir`); the written paths, ``export.json`` last.

    ``ExportError`` for a bad format or directory; ``CheckpointFormatError`` (also a
    ``ValueError``) for a bad checkpoint. Both have one-line messages.
    """
    kind = _check_format(fmt)
    model, info = load_checkpoint(checkpoint_dir or default_checkpoint_dir(), device="cpu")
    target = Path(out_dir) if out_dir is not None else default_export_dir(info.version, kind)
    return export_model(model, kind, target, name=info.name, version=info.version)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The ``export.json`` of an export directory, checked; ``ExportError`` if unusable."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{directory}: no {MANIFEST} (not an export directory)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: unreadable ({str(e).splitlines()[0]})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{path}: not a {MANIFEST_FORMAT} manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(GRAPHS):
        raise ExportError(f"{path}: 'files' must name the graphs {', '.join(GRAPHS)}")
    for graph_name, file in files.items():
        if not (Path(directory) / str(file)).is_file():
            raise ExportError(f"{path}: {graph_name} file {file!r} is missing")
    return manifest


def is_exported(directory: str | Path, version: str, fmt: str) -> bool:
    """Whether ``directory`` holds a complete ``fmt`` export of checkpoint ``version``."""
    try:
        manifest = read_manifest(directory)
    except ExportError:
        return False
    checkpoint = manifest.get("checkpoint") or {}
    return manifest.get("runtime") == fmt and checkpoint.get("version") == version
