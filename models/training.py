"""Training and evaluation loops for :class:`FusionModel`, on plain labelled windows.

Shapes: B windows per batch, C classes. Inputs are :class:`models.windows.WindowInputs`
(keys unused) with an int label each, or :class:`models.windows.Batches` that make their
own batches (training's embedding cache: a frozen backbone's features computed once);
nothing here knows streams or files.

Modality dropout (see :func:`drop_modalities`): during training modalities are hidden
at random (never all of them), so the model learns to predict from any subset, which is
what live streams with missing modalities need.

``fit(..., freeze=("video",))`` trains the rest around a frozen encoder: its weights stay
out of the optimizer and it runs in eval mode (:meth:`FusionModel.set_frozen`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from models.experts import ModalityHeads
from models.fusion import Encoded, FullBatch, FusionModel
from models.windows import Batches, WindowInputs, as_batches

MODALITIES = ("video", "audio", "text")
# When a window keeps one modality only, which one: video, the slowest encoder to learn,
# is picked more often, so an easier modality cannot leave it untrained.
KEEP_ONE_WEIGHTS = (3.0, 1.0, 1.0)
COMBOS: tuple[tuple[str, ...], ...] = tuple(
    c for n in (1, 2, 3) for c in itertools.combinations(MODALITIES, n)
)


def combo_name(combo: Sequence[str]) -> str:
    return "+".join(combo)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 14
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    modality_dropout: float = 0.5
    aux_weight: float = 0.5  # weight of each per-modality auxiliary loss (0 = off)
    seed: int = 0


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    loss: float
    accuracy: float
    seconds: float


def only(batch: FullBatch, keep: Sequence[str]) -> FullBatch:
    """``batch`` with every modality not in ``keep`` marked absent."""
    return replace(
        batch,
        video_mask=batch.video_mask if "video" in keep else torch.zeros_like(batch.video_mask),
        audio_mask=batch.audio_mask if "audio" in keep else torch.zeros_like(batch.audio_mask),
        text_mask=batch.text_mask if "text" in keep else torch.zeros_like(batch.text_mask),
    )


def drop_modalities(batch: FullBatch, p: float, gen: torch.Generator) -> FullBatch:
    """Modality dropout, never hiding every present modality of a window: with
    probability ``p`` a window keeps one present modality only (so each encoder must
    carry a prediction on its own, and an easier modality cannot starve a harder one);
    otherwise each modality is hidden with probability ``p / 2``."""
    masks = [batch.video_mask, batch.audio_mask, batch.text_mask]
    present = torch.stack([m.any(dim=1) for m in masks], dim=1)  # [B, 3]
    b = present.shape[0]
    single = torch.rand(b, generator=gen) < p  # [B]
    weights = present.float() * torch.tensor(KEEP_ONE_WEIGHTS) + 1e-6  # [B, 3]
    pick = torch.multinomial(weights, 1, generator=gen).squeeze(1)  # [B]
    keep_one = torch.zeros_like(present)
    keep_one[torch.arange(b), pick] = True
    random_drop = torch.rand(present.shape, generator=gen) < p / 2
    drop = torch.where(single[:, None], ~keep_one, random_drop) & present
    all_gone = (present & ~drop).sum(dim=1) == 0
    drop[all_gone] = False  # keep what there was rather than nothing
    return replace(
        batch,
        video_mask=batch.video_mask & ~drop[:, 0:1],
        audio_mask=batch.audio_mask & ~drop[:, 1:2],
        text_mask=batch.text_mask & ~drop[:, 2:3],
    )


def _hide(enc: Encoded, kept: FullBatch) -> Encoded:
    """``enc`` with the masks of ``kept`` (modality dropout applied after encoding)."""
    return replace(
        enc,
        video_mask=enc.video_mask & kept.video_mask,
        audio_mask=enc.audio_mask & kept.audio_mask,
        text_mask=enc.text_mask & kept.text_mask,
    )


def fit(
    model: FusionModel,
    windows: Sequence[WindowInputs] | Batches,
    labels: Sequence[int],
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, int, float, float], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    freeze: Sequence[str] = (),
) -> list[EpochReport]:
    """Train in place. ``on_step(epoch, step, loss, acc)`` after every batch. The encoders
    of ``freeze`` (modality names) keep their weights; they are unfrozen again on return."""
    if len(windows) != len(labels) or len(windows) == 0:
        raise ValueError("need as many labels as windows, and at least one")
    before = model.frozen
    model.set_frozen(freeze)
    try:
        return _fit(model, as_batches(windows, model.spec), labels, cfg, device, on_step, on_epoch)
    finally:
        model.set_frozen(before)


def _fit(
    model: FusionModel,
    windows: Batches,
    labels: Sequence[int],
    cfg: TrainConfig,
    device: torch.device | str,
    on_step: Callable[[int, int, float, float], None] | None,
    on_epoch: Callable[[EpochReport], None] | None,
) -> list[EpochReport]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    y_all = torch.tensor(labels, dtype=torch.int64)
    model.to(device)
    classes = len(model.spec.labels)
    # a model's own per-modality heads (LateFusionModel's votes) are also its auxiliary ones
    own = getattr(model, "experts", None)
    aux = own if isinstance(own, ModalityHeads) else ModalityHeads(model.spec.d_model, classes)
    aux.to(device).train()
    params = [p for p in dict.fromkeys((*model.parameters(), *aux.parameters())) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(windows) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    reports: list[EpochReport] = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()  # every epoch, should on_epoch have evaluated; frozen encoders stay eval
        order = rng.permutation(len(windows))
        total, correct, loss_sum = 0, 0, 0.0
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            full = windows.batch(idx.tolist())
            kept = drop_modalities(full, cfg.modality_dropout, gen).to(device)
            y = y_all[idx].to(device)
            if cfg.aux_weight > 0:
                enc = model.encode_batch(full.to(device))  # every present item, dropped or not
                logits = model.fuse(_hide(enc, kept))
                loss = loss_fn(logits, y)  # the reported loss: fusion's alone
                total_loss = loss
                for aux_logits, has in aux(enc):
                    if bool(has.any()):
                        total_loss = total_loss + cfg.aux_weight * loss_fn(aux_logits[has], y[has])
            else:
                logits = model(kept)
                loss = total_loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            n = len(idx)
            total += n
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * n
            if on_step is not None:
                on_step(epoch, step, loss_sum / total, correct / total)
        report = EpochReport(epoch, loss_sum / total, correct / total, time.perf_counter() - t0)
        reports.append(report)
        if on_epoch is not None:
            on_epoch(report)
    model.eval()
    return reports


@torch.inference_mode()
def predict(
    model: FusionModel,
    windows: Sequence[WindowInputs] | Batches,
    keep: Sequence[str] = MODALITIES,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> np.ndarray:
    """Predicted class per window using only the modalities in ``keep``."""
    model.to(device).eval()
    source = as_batches(windows, model.spec)
    out: list[np.ndarray] = []
    for i in range(0, len(source), batch_size):
        idx = list(range(i, min(i + batch_size, len(source))))
        batch = only(source.batch(idx), keep).to(device)
        out.append(model(batch).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate(
    model: FusionModel,
    windows: Sequence[WindowInputs] | Batches,
    labels: Sequence[int],
    *,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float], np.ndarray]:
    """Accuracy for every combination of modalities, and the confusion matrix
    (rows: truth, columns: prediction) with all three."""
    y = np.asarray(labels)
    acc: dict[str, float] = {}
    confusion = np.zeros((len(model.spec.labels),) * 2, dtype=np.int64)
    for combo in COMBOS:
        pred = predict(model, windows, combo, device=device)
        acc[combo_name(combo)] = float((pred == y).mean()) if len(y) else 0.0
        if combo == MODALITIES:
            np.add.at(confusion, (y, pred), 1)
    return acc, confusion
