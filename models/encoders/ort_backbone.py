"""A frozen torch backbone that runs on onnxruntime on the CPU, where that is faster.

EfficientNet-Lite0 takes ~33 ms a frame in eager torch on one CPU thread here and ~6 ms
exported to ONNX and run by onnxruntime (``streamer bench``, ``encoders``), with the same
output to 1e-5. :class:`OrtBackbone` wraps such a module: on a CPU tensor, outside a
trace, it runs the module's ONNX export (made once, cached under
``$XDG_CACHE_HOME/streamer/backbones/``, keyed by the weights' sha256 and the input
shape); anywhere else (a GPU, ``streamer export`` tracing it, no onnxruntime installed,
an export that failed) it is the module itself. Only frozen, batch-independent
backbones of one input tensor are wrapped (their output ``[N, dim]`` float32).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

OPSET = 17


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "streamer" / "backbones"


def _tracing() -> bool:
    return torch._C._get_tracing_state() is not None or torch.onnx.is_in_onnx_export()


class OrtBackbone(nn.Module):
    """``module`` (frozen) run by onnxruntime on CPU inputs. ``key`` names its weights and
    options (e.g. ``efficientnet-lite0-<sha256>-224``); ``example`` is one input as the
    runtime gives it (its non-batch shape is fixed in the graph)."""

    def __init__(self, module: nn.Module, key: str, example: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        self.key = key
        self.example = example
        self.use_onnxruntime = True  # False: always the torch module (the bench compares)
        self._session: Any = None
        self._failed = False
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # the module's own methods (tags, classify)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fits = x.shape[1:] == self.example.shape[1:]
        if x.device.type == "cpu" and fits and self.use_onnxruntime and not _tracing():
            session = self._ort()
            if session is not None:
                (out,) = session.run(None, {"x": x.contiguous().numpy()})
                return torch.from_numpy(out)
        out_t: torch.Tensor = self.module(x)
        return out_t

    def _ort(self) -> Any:
        if self._session is None and not self._failed:
            with self._lock:
                if self._session is None and not self._failed:
                    try:
                        self._session = self._load()
                    except Exception as e:  # no onnxruntime, or an export it cannot take
                        self._failed = True
                        log.warning("%s runs on torch (onnxruntime: %s)", self.key, e)
        return self._session

    def _load(self) -> Any:
        import onnxruntime as ort

        path = cache_dir() / f"{self.key}.onnx"
        if not path.is_file():
            self._export(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()  # model.threads, as torch has it
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _export(self, path: Path) -> None:
        from models.export import quiet_tracing  # not at the top: export imports encoders

        path.parent.mkdir(parents=True, exist_ok=True)
        module = self.module.cpu().eval()
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
        os.close(fd)
        try:
            with torch.no_grad(), quiet_tracing():
                torch.onnx.export(
                    module, (self.example.cpu(),), tmp, dynamo=False, opset_version=OPSET,
                    input_names=["x"], output_names=["y"],
                    dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                )  # fmt: skip
            os.replace(tmp, path)  # whole or not at all, should two processes race
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("exported %s to %s for onnxruntime", self.key, path)
