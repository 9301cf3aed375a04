"""``streamer train`` and ``streamer eval``: the clip folder in, a checkpoint or a table out."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from models.checkpoint import (
    FUSION_CLASS,
    LATE_FUSION_CLASS,
    CheckpointFormatError,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from models.fusion import FusionModel
from models.spec import ModelSpec
from models.training import COMBOS, EpochReport, TrainConfig, combo_name, evaluate, fit
from streamer.config import WindowConfig
from streamer.errors import CheckpointError, ConfigError
from streamer.inference.device import resolve_device
from streamer.training.clipset import WindowSet, load_split, read_labels
from streamer.training.embedding import ITEMS, EmbeddedWindows, cached_features

QUICK = TrainConfig(epochs=5, batch_size=16)
QUICK_CLIPS = 40
FUSIONS = {"attention": FUSION_CLASS, "late": LATE_FUSION_CLASS}


def fusion_for(fusion: str, encoders: Mapping[str, str] | None) -> str:
    """``--fusion`` -> attention or late. ``auto``: late (attention plus one vote per
    modality, :mod:`models.late_fusion`) when an encoder is pretrained or ``onnx:``, where
    it fuses few-shot data better; attention for builtin encoders trained from scratch."""
    if fusion == "auto":
        pretrained = any(name != "builtin" for name in (encoders or {}).values())
        return "late" if pretrained else "attention"
    if fusion not in FUSIONS:
        raise ConfigError("--fusion", f"unknown {fusion!r}; known: auto, {', '.join(FUSIONS)}")
    return fusion


def spec_for(train_dir: Path) -> ModelSpec:
    """The default spec, whose labels are the ten digits; for data labelled otherwise (your
    own events, ``streamer record --label``), the data's labels, sorted."""
    default = ModelSpec()
    if not (train_dir / "labels.csv").is_file():
        return default  # reading the data says what is missing, after the encoders' check
    found = {seg.label for segs in read_labels(train_dir).values() for seg in segs}
    if found <= set(default.labels):
        return default
    if len(found) < 2:
        raise ConfigError("DATA", f"{train_dir}/labels.csv: one label ({', '.join(found)}); "
                          "a classifier needs at least two")  # fmt: skip
    return replace(default, name="custom-events", labels=tuple(sorted(found)))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=console, transient=False,
    )  # fmt: skip


def _load(
    split: Path, spec: ModelSpec, window: WindowConfig, limit: int | None, console: Console
) -> WindowSet:
    with _progress(console) as bar:
        task = bar.add_task(f"reading {split.name}", total=None, info="")

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, info=f"{done}/{total} clips")

        ws = load_split(split, spec, window, limit=limit, progress=step)
        bar.update(task, info=f"{len(ws)} windows")
    return ws


def _embedded(
    model: FusionModel, ws: WindowSet, split: Path, dev: torch.device, console: Console
) -> tuple[EmbeddedWindows, float]:
    """``ws`` with the features of ``model``'s frozen backbones (embedded once, cached in
    ``DATA/.cache``), and the seconds that took; says what it embedded or read."""
    t0 = time.perf_counter()
    with _progress(console) as bar:
        tasks: dict[str, TaskID] = {}

        def step(modality: str, done: int, total: int) -> None:
            if modality not in tasks:
                tasks[modality] = bar.add_task(f"embedding {modality}", total=total, info="")
            bar.update(tasks[modality], completed=done, info=f"{done}/{total} {ITEMS[modality]}")

        feats, report = cached_features(
            model, ws, split.parent / ".cache", split.name, device=dev, progress=step
        )
    seconds = time.perf_counter() - t0

    def said(counts: dict[str, int]) -> str:
        return ", ".join(f"{m} {n} {ITEMS[m]}" for m, n in counts.items())

    if report.embedded:
        console.print(
            f"embedding {split.name}: {said(report.embedded)} in {seconds:.1f} s (cached next time)"
        )
    if report.cached:
        console.print(f"embedding {split.name}: {said(report.cached)} read from the cache")
    return EmbeddedWindows(ws, feats, model.spec), seconds


def train_command(
    data: str,
    out: str,
    *,
    epochs: int | None,
    quick: bool,
    device: str,
    seed: int,
    command: str,
    freeze: Sequence[str] = (),
    spec: ModelSpec | None = None,
    encoders: Mapping[str, str] | None = None,
    fusion: str = "auto",
) -> int:
    """Train on DATA/train, evaluate on DATA/test, write the checkpoint; ``command`` is
    recorded in its config.json so the checkpoint says how it was made. The model is
    ``spec`` (default: ``ModelSpec()``, with the data's labels where they are not digits)
    with the named ``encoders`` (default: builtin); the encoders of ``freeze`` keep their
    initial weights; ``fusion``: see :func:`fusion_for`."""
    root = Path(data)
    console = Console(stderr=True)
    spec = spec or spec_for(root / "train")
    window = WindowConfig()
    dev = resolve_device(device)
    limit = QUICK_CLIPS if quick else None
    cfg = QUICK if quick else TrainConfig()
    cfg = TrainConfig(**{**cfg.__dict__, "seed": seed, **({"epochs": epochs} if epochs else {})})
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    fusion = fusion_for(fusion, encoders)
    try:  # before the data: a bad encoder name or file is said at once
        model = build_model(spec, encoders, FUSIONS[fusion])
    except ValueError as e:  # an unknown name, an unusable onnx: file or a missing package
        raise ConfigError("--encoders", str(e)) from None
    console.print(f"fusion: {fusion}")
    train = _load(root / "train", spec, window, limit, console)
    test = _load(root / "test", spec, window, limit, console)
    load_s = time.perf_counter() - t_start
    console.print(f"loading: {len(train)} + {len(test)} windows in {load_s:.1f} s")
    x_train, embed_s = _embedded(model, train, root / "train", dev, console)
    x_test, embed_test_s = _embedded(model, test, root / "test", dev, console)
    embed_s += embed_test_s
    t_fit = time.perf_counter()
    with _progress(console) as bar:
        task = bar.add_task("training", total=cfg.epochs, info="")

        def on_step(epoch: int, step: int, loss: float, acc: float) -> None:
            bar.update(task, info=f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f} acc {acc:.3f}")

        def on_epoch(r: EpochReport) -> None:
            bar.advance(task)
            console.print(
                f"epoch {r.epoch + 1}/{cfg.epochs}: loss {r.loss:.3f}, "
                f"train accuracy {r.accuracy:.3f}, {r.seconds:.0f} s"
            )

        reports = fit(
            model, x_train, train.labels.tolist(), cfg, device=dev, on_step=on_step,
            on_epoch=on_epoch, freeze=freeze,
        )  # fmt: skip
    fit_s = time.perf_counter() - t_fit
    console.print(f"training: {cfg.epochs} epochs in {fit_s:.1f} s")
    train_s = time.perf_counter() - t_start
    acc, confusion = evaluate(model, x_test, test.labels.tolist(), device=dev)
    model.to("cpu")
    metrics: dict[str, Any] = {
        "test_accuracy": acc,
        "train_accuracy_last_epoch": reports[-1].accuracy,
        "train_loss_last_epoch": reports[-1].loss,
        "train_windows": len(train),
        "test_windows": len(test),
        "seconds": round(train_s, 1),
        "seconds_loading": round(load_s, 1),
        "seconds_embedding": round(embed_s, 1),
        "seconds_training": round(fit_s, 1),
        "confusion": confusion.tolist(),
    }
    info = save_checkpoint(
        model, Path(out), metrics=metrics, trained=True,
        extra={
            "command": command,
            "training": {
                **cfg.__dict__, "device": str(dev), "threads": torch.get_num_threads(),
                "freeze": list(freeze),
            },
            "data": {"path": str(root.resolve()), "window": window.model_dump()},
        },
    )  # fmt: skip
    print_table(acc, confusion, spec, Console())
    print(f"checkpoint {out} ({info.version[:19]}), {train_s:.0f} s")
    return 0


def print_table(
    acc: dict[str, float], confusion: np.ndarray, spec: ModelSpec, console: Console
) -> None:
    t = Table(title="accuracy by modality combination")
    t.add_column("modalities")
    t.add_column("accuracy", justify="right")
    for combo in COMBOS:
        name = combo_name(combo)
        t.add_row(name, f"{acc[name] * 100:.1f} %")
    console.print(t)
    c = Table(title="confusion (rows: truth, columns: predicted), all modalities")
    c.add_column("")
    for lab in spec.labels:
        c.add_column(lab, justify="right")
    for lab, row in zip(spec.labels, confusion, strict=True):
        c.add_row(lab, *(str(int(v)) for v in row))
    console.print(c)


def eval_command(checkpoint: str, data: str, *, json_file: str | None, device: str) -> int:
    dev = resolve_device(device)
    try:
        model, info = load_checkpoint(Path(checkpoint), device=dev)
    except CheckpointFormatError as e:
        raise CheckpointError(f"CHECKPOINT: {e}") from None
    root = Path(data)
    split = root / "test" if (root / "test").is_dir() else root
    if not (split / "labels.csv").is_file():
        raise ConfigError("DATA", f"no labels.csv in {split}")
    console = Console(stderr=True)
    window = WindowConfig()
    ws = _load(split, info.spec, window, None, console)
    windows, _ = _embedded(model, ws, split, dev, console)
    acc, confusion = evaluate(model, windows, ws.labels.tolist(), device=dev)
    print_table(acc, confusion, info.spec, Console())
    if json_file:
        Path(json_file).write_text(json.dumps(acc, indent=2) + "\n")
    return 0
