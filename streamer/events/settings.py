"""The ``events:`` section of the config: which labels become events, and when.

Absent: no events (a node publishes what it did before). Present, even empty (``events:
{}``): every label of the model except ``none``, with the defaults below. A label's
event starts once its score stays at or above ``on`` for ``min_windows`` windows in a
row, and ends once it stays below ``off`` for ``cooldown_s`` seconds of event time;
``overrides`` sets ``on``, ``off``, ``min_windows`` or ``cooldown_s`` per label.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Score = Annotated[float, Field(ge=0.0, le=1.0)]
Windows = Annotated[int, Field(ge=1, le=10_000)]
Seconds = Annotated[float, Field(ge=0.0, le=86_400.0)]
MAX_LABELS = 4096


class Thresholds(BaseModel):
    """One label's hysteresis, resolved (:meth:`EventsConfig.thresholds`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: Score
    off: Score
    min_windows: Windows
    cooldown_s: Seconds


class LabelOverride(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    on: Score | None = None
    off: Score | None = None
    min_windows: Windows | None = None
    cooldown_s: Seconds | None = None


class EventsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # "all": every label of the model (a tagging model: every tag that scores), or a list
    labels: Literal["all"] | list[str] = "all"
    exclude: list[str] = ["none"]  # with labels: all, these are never events
    on: Score = 0.6
    off: Score = 0.4
    min_windows: Windows = 2
    cooldown_s: Seconds = 2.0
    # an open event's "update": when its peak rises, at most once per this many seconds
    update_interval_s: Seconds = 5.0
    # labels tracked per stream at once (a tagging model's vocabulary is open); past it a
    # new label is not tracked until one is released, counted in stats
    max_labels: Annotated[int, Field(ge=1, le=MAX_LABELS)] = 64
    overrides: dict[str, LabelOverride] = {}

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        if v == "all":
            return v
        if not v:
            raise ValueError("an empty list: name labels, or use all")
        if len(v) > MAX_LABELS:
            raise ValueError(f"{len(v)} labels (at most {MAX_LABELS})")
        seen: set[str] = set()
        for i, label in enumerate(v):
            if not label.strip() or label in seen:
                raise ValueError(f"[{i}]: {label!r} is empty or repeated")
            seen.add(label)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EventsConfig:
        if self.off > self.on:
            raise ValueError(f"off: {self.off} is above on ({self.on}); off <= on")
        for label, o in self.overrides.items():
            if isinstance(self.labels, list) and label not in self.labels:
                raise ValueError(f"overrides.{label}: not in labels")
            t = self.thresholds(label, o)
            if t.off > t.on:
                raise ValueError(f"overrides.{label}.off: {t.off} is above on ({t.on}); off <= on")
        return self

    def thresholds(self, label: str, o: LabelOverride | None = None) -> Thresholds:
        """``label``'s hysteresis: its override where it has one, else the defaults."""
        o = o if o is not None else self.overrides.get(label)
        return Thresholds(
            on=self.on if o is None or o.on is None else o.on,
            off=self.off if o is None or o.off is None else o.off,
            min_windows=self.min_windows if o is None or o.min_windows is None else o.min_windows,
            cooldown_s=self.cooldown_s if o is None or o.cooldown_s is None else o.cooldown_s,
        )

    def tracks(self, label: str) -> bool:
        if isinstance(self.labels, list):
            return label in self.labels
        return label not in self.exclude

    def announced(self, model_labels: tuple[str, ...], readout: str) -> list[str]:
        """The labels that get a retained ON/OFF and a Home Assistant binary sensor: the
        list, or (``all``) the model's labels; a tagging model's open vocabulary has none
        to list."""
        if isinstance(self.labels, list):
            return list(self.labels)
        if readout == "tags":
            return []
        return [x for x in model_labels if self.tracks(x)]
