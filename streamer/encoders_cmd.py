"""``streamer encoders``: every registered encoder, where it comes from, and its speed here."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from models.encoders.frozen import FrozenEncoder, ProvenanceError
from models.encoders.pretrained import INSTALL, PRETRAINED
from models.encoders.registry import (
    BUILTIN,
    MODALITIES,
    EncoderChoice,
    build_encoder,
    encoder_names,
)
from models.encoders.speech import SPEECH
from models.spec import ModelSpec
from models.tokenizer import batch_encode

RUNS = 5  # timed items, after one warm-up


@dataclass(frozen=True)
class Row:
    name: str
    modality: str
    package: str  # "built in", "name version", or "not installed (...)"
    dim: str
    licence: str
    ms: float | None  # per item; None: not built


def _item(modality: str, spec: ModelSpec) -> tuple[torch.Tensor, ...]:
    """One item of ``modality``, as the runtime hands it to an encoder."""
    g = torch.Generator().manual_seed(0)
    if modality == "video":
        s = spec.image_size
        return (torch.randint(0, 256, (1, s, s, 3), dtype=torch.uint8, generator=g),)
    if modality == "audio":
        return (torch.randn(1, spec.segment_samples, generator=g) * 0.1,)
    return batch_encode(["a person walks into the kitchen"])


def measure(modality: str, name: str, spec: ModelSpec) -> Row:
    info = {(p.modality, p.name): p for p in PRETRAINED + SPEECH}.get((modality, name))
    try:
        enc = build_encoder(modality, EncoderChoice(name), spec).eval()
    except ProvenanceError:
        if info is None:
            raise
        return Row(name, modality, f"not installed ({INSTALL})", str(info.dim), info.licence, None)
    except Exception as e:  # a listing goes on past an encoder that cannot be built here
        return Row(name, modality, f"cannot be built: {e}", "-", "-", None)
    if isinstance(enc, FrozenEncoder):
        prov = enc.provenance
        package = f"{prov.package} {prov.version}" if prov.package else prov.file
        dim, licence = str(enc.dim), prov.licence
    else:
        package = "built in" if name == BUILTIN else "-"
        dim, licence = str(spec.d_model), "Apache-2.0" if name == BUILTIN else "-"
    item = _item(modality, spec)
    with torch.inference_mode():
        enc(*item)  # warm-up
        t0 = time.perf_counter()
        for _ in range(RUNS):
            enc(*item)
        ms = (time.perf_counter() - t0) / RUNS * 1000.0
    return Row(name, modality, package, dim, licence, ms)


def rows(spec: ModelSpec | None = None) -> list[Row]:
    spec = spec or ModelSpec()
    return [measure(m, n, spec) for m in MODALITIES for n in encoder_names(m)]


def encoders_command() -> int:
    spec = ModelSpec()
    table = Table(
        title=(
            f"Encoders (ms per item: one item - a {spec.image_size}x{spec.image_size} frame, "
            f"a {spec.audio_segment:g} s audio segment, a short sentence - on this CPU, "
            f"mean of {RUNS} after one warm-up)"
        ),
    )
    for col in ("name", "modality", "package", "dim", "licence"):
        table.add_column(col)
    table.add_column("ms/item", justify="right")
    for r in rows(spec):
        ms = "-" if r.ms is None else f"{r.ms:.2f}"
        table.add_row(r.name, r.modality, r.package, r.dim, r.licence, ms)
    console = Console(width=None if Console().is_terminal else 160)
    console.print(table)
    return 0
