"""The YAML config, validated by pydantic. Each component receives only its own sub-model.

Errors become one line naming the field: ``streams[0].video: unsupported scheme 'ftp'``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from streamer.cluster.settings import RayConfig, check_host
from streamer.configfile import read_config_file, set_value
from streamer.errors import ConfigError
from streamer.events.settings import EventsConfig
from streamer.history.settings import HistoryConfig
from streamer.sinks.settings import SinksConfig
from streamer.snapshots.settings import SnapshotsConfig

ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
VIDEO_SCHEMES = ("file", "udp", "rtsp", "http", "https", "srt", "v4l2", "synthetic", "webrtc")
AUDIO_SCHEMES = (*VIDEO_SCHEMES, "mic")


def _check_id(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"{value!r} must match [A-Za-z0-9_-]+")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Model):
    url: str = "mqtt://127.0.0.1:1883"
    prefix: str = "streamer"
    qos: Literal[0, 1, 2] = 1
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    client_id: str | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    outbox_size: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    # SQLite spool of what a shutdown could not deliver, resent first at the next start
    outbox_dir: Path | None = None
    stats_interval: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # Home Assistant MQTT discovery: the prefix HA listens on; null = publish no discovery
    discovery_prefix: str | None = "homeassistant"

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "password: never in the config; use password_file or STREAMER_MQTT_PASSWORD"
            )
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v == "embedded":
            return v
        u = urlparse(v)
        if u.scheme not in ("mqtt", "mqtts", "embedded"):
            raise ValueError(f"unsupported scheme {u.scheme!r} (use mqtt://, mqtts:// or embedded)")
        if u.scheme == "embedded" and u.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the embedded broker listens on loopback only")
        if not u.hostname:
            raise ValueError("no host in the URL")
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            raise ValueError(f"bad port: {e}") from None
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "#+") or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"{v!r} is not a valid topic prefix")
        return v

    @field_validator("discovery_prefix")
    @classmethod
    def _discovery_prefix(cls, v: str | None) -> str | None:
        if v is None:
            return v
        bad = not v or v.startswith(("/", "$")) or v.endswith("/") or "//" in v
        if bad or any(c in v for c in "#+\0"):
            raise ValueError(f"{v!r} is not a topic prefix (no wildcards, no empty level)")
        return v

    @field_validator("password_file", "ca_file")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v

    @model_validator(mode="after")
    def _tls(self) -> MqttConfig:
        if self.ca_file is not None and not self.url.startswith("mqtts://"):
            raise ValueError("ca_file needs an mqtts:// url")
        return self

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        u = urlparse(self.url)
        return u.port or (8883 if u.scheme == "mqtts" else 1883)

    @field_validator("outbox_dir")
    @classmethod
    def _outbox_dir(cls, v: Path | None) -> Path | None:
        if v is not None and v.exists() and not v.is_dir():
            raise ValueError(f"not a directory: {v}")
        return v

    @property
    def embedded(self) -> bool:
        return self.url.split(":", 1)[0] == "embedded"

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")

    def password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return os.environ.get("STREAMER_MQTT_PASSWORD")


class WindowConfig(_Model):
    length: Annotated[float, Field(gt=0, le=60)] = 2.0
    hop: Annotated[float, Field(gt=0, le=60)] = 0.5
    max_delay: Annotated[float, Field(ge=0, le=60)] = 0.5

    @model_validator(mode="after")
    def _multiple(self) -> WindowConfig:
        if self.hop > self.length:
            raise ValueError("hop must not exceed length")
        k = self.length / self.hop
        if abs(k - round(k)) > 1e-9:
            raise ValueError("length must be a whole multiple of hop")
        return self

    @property
    def length_ns(self) -> int:
        return round(self.length * 1e9)

    @property
    def hop_ns(self) -> int:
        return round(self.hop * 1e9)

    @property
    def max_delay_ns(self) -> int:
        return round(self.max_delay * 1e9)


# names model.checkpoint takes besides a directory (models.presets.PRESETS, kept here too
# so that reading a config does not import torch)
MODEL_PRESETS = ("reference", "perception")


class ModelConfig(_Model):
    checkpoint: Path | None = None
    device: str = "auto"
    max_batch: Annotated[int, Field(ge=1, le=1024)] = 16
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0
    # "onnx": run the checkpoint's ONNX export with onnxruntime on CPU, exported on first use
    # to onnx_dir (null: a cache directory keyed by the checkpoint version)
    runtime: Literal["torch", "onnx"] = "torch"
    onnx_dir: Path | None = None
    # mixed precision for the torch runtime: auto = bf16 (or fp16) on CUDA, fp32 on the CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # intra-op CPU threads of the model (torch, process-wide; or onnxruntime), per process:
    # auto = 1, as the runner's batches are small (scale out with --workers)
    threads: Literal["auto"] | Annotated[int, Field(ge=1, le=1024)] = "auto"
    # replay the fusion step from CUDA graphs (torch runtime on a CUDA device)
    cuda_graphs: bool = False

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|cuda|cuda:\d+)$", v):
            raise ValueError(f"{v!r} is not auto, cpu, cuda or cuda:N")
        return v

    @field_validator("checkpoint")
    @classmethod
    def _ckpt(cls, v: Path | None) -> Path | None:
        if v is not None and str(v) in MODEL_PRESETS:
            return v
        if v is not None and not (v / "config.json").is_file():
            raise ValueError(f"not a checkpoint directory (no config.json): {v}")
        return v

    @field_validator("onnx_dir")
    @classmethod
    def _onnx_dir(cls, v: Path | None) -> Path | None:
        if v is not None and v.exists() and not v.is_dir():
            raise ValueError(f"not a directory: {v}")
        return v

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str, info: ValidationInfo) -> str:
        device = info.data.get("device", "auto")  # validated before: declared earlier
        if v == "onnx" and device not in ("auto", "cpu"):
            raise ValueError(f"onnx runs on the CPU only; device {device!r} needs runtime torch")
        return v

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str, info: ValidationInfo) -> str:
        device = info.data.get("device", "auto")
        if v == "fp16" and device == "cpu":
            raise ValueError("fp16 needs a CUDA device; use bf16 (or fp32) on the CPU")
        if v in ("bf16", "fp16") and info.data.get("runtime") == "onnx":
            raise ValueError(f"{v} is for runtime torch; the onnx runtime runs fp32")
        return v

    @field_validator("cuda_graphs")
    @classmethod
    def _cuda_graphs(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("device") == "cpu":
            raise ValueError("CUDA graphs need a CUDA device, not cpu")
        if v and info.data.get("runtime") == "onnx":
            raise ValueError("CUDA graphs are for runtime torch on a CUDA device")
        return v


def _check_url(v: str | None, schemes: tuple[str, ...]) -> str | None:
    if v is None:
        return None
    if v == "webrtc":
        return v
    scheme = v.split(":", 1)[0] if ":" in v else ""
    if scheme not in schemes:
        raise ValueError(f"unsupported scheme {scheme!r}" if scheme else f"not a URL: {v!r}")
    if scheme == "file":
        path = urlparse(v).path
        if not path.startswith("/"):
            raise ValueError(f"file:// needs an absolute path, got {v!r}")
        if not Path(path).is_file():
            raise ValueError(f"file not found: {path}")
    elif scheme == "v4l2":
        if not urlparse(v).path.startswith("/dev/"):
            raise ValueError(f"expected v4l2:///dev/videoN, got {v!r}")
    elif scheme == "mic":
        if not v[4:]:
            raise ValueError("expected mic:default, mic:<name> or mic:<index>")
    elif scheme not in ("synthetic",) and not urlparse(v).netloc:
        raise ValueError(f"no host in {v!r}")
    return v


class StreamConfig(_Model):
    id: str
    video: str | None = None
    audio: str | None = None
    text: list[str] | None = None
    realtime: bool = True
    loop: bool = False
    capture: Literal["thread", "process"] | None = None  # PyAV, mic:; None: the node's
    host: str | None = None  # --engine ray: run on the Ray node labelled streamer.io/host=HOST

    _id = field_validator("id")(classmethod(lambda cls, v: _check_id(v)))
    _host = field_validator("host")(
        classmethod(lambda cls, v: None if v is None else check_host(v))
    )

    @field_validator("video")
    @classmethod
    def _video(cls, v: str | None) -> str | None:
        return _check_url(v, VIDEO_SCHEMES)

    @field_validator("audio")
    @classmethod
    def _audio(cls, v: str | None) -> str | None:
        return _check_url(v, AUDIO_SCHEMES)

    @field_validator("text")
    @classmethod
    def _text(cls, v: list[str] | None) -> list[str] | None:
        for i, t in enumerate(v or []):
            if not t or "#" in t or "+" in t:
                raise ValueError(f"[{i}] {t!r} is not a topic name (no wildcards)")
        return v

    @model_validator(mode="after")
    def _some_input(self) -> StreamConfig:
        if self.video is None and self.audio is None and not self.text and self.text is not None:
            raise ValueError("a stream needs video, audio or text")
        for name in ("realtime", "loop"):
            if name in self.model_fields_set and not self._is_file():
                raise ValueError(f"{name} applies to file:// sources only")
        return self

    def _is_file(self) -> bool:
        return any(u is not None and u.startswith("file:") for u in (self.video, self.audio))

    def text_topics(self, prefix: str, node: str) -> list[str]:
        return list(self.text) if self.text is not None else [f"{prefix}/{node}/{self.id}/text"]


def split_listen(v: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); ValueError when malformed."""
    host, sep, port = v.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {v!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(_Model):
    """The HTTP server: WHIP ingest, the browser page, live events, /metrics, /healthz."""

    listen: str
    token_file: Path | None = None  # required unless listen is a loopback address
    # offered to browsers and used by the node's own ICE agent; [] on a LAN-only box
    ice_servers: list[str] = ["stun:stun.l.google.com:19302"]
    # the node's ICE host candidates; null = every non-loopback interface address
    # (loopback when there is no other)
    host_addresses: list[str] | None = None
    # connections open at a time; one more gets a 503 and is closed
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 256
    # close a connection that has not sent a whole request head for this long
    # (idle between requests or half-sent alike)
    keepalive_timeout: Annotated[float, Field(gt=0, le=3600)] = 15.0
    # a request body (a WHIP offer) must arrive within this; 408 otherwise
    read_timeout: Annotated[float, Field(gt=0, le=3600)] = 10.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        split_listen(v)
        return v

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, v: Path | None) -> Path | None:
        if v is None:
            return v
        try:
            token = v.read_text().strip()
        except OSError as e:
            raise ValueError(f"cannot read {v}: {e.strerror or e}") from None
        if not token:
            raise ValueError(f"{v} is empty")
        return v

    @field_validator("ice_servers")
    @classmethod
    def _ice(cls, v: list[str]) -> list[str]:
        for i, url in enumerate(v):
            if not re.match(r"^(stun|turns?):[^\s]+$", url):
                raise ValueError(f"[{i}]: {url!r} is not a STUN or TURN URL (stun, turn, turns)")
        return v

    @field_validator("host_addresses")
    @classmethod
    def _hosts(cls, v: list[str] | None) -> list[str] | None:
        for i, a in enumerate(v or []):
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ValueError(f"[{i}]: {a!r} is not an IP address") from None
        return v

    @model_validator(mode="after")
    def _token_needed(self) -> HttpConfig:
        host, _ = split_listen(self.listen)
        if self.token_file is None and not is_loopback(host):
            raise ValueError(f"token_file: required when listen ({host}) is not a loopback address")
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    def token(self) -> str | None:
        return self.token_file.read_text().strip() if self.token_file is not None else None


# Streams per node: 2 cores sustain 64-128 (see Performance); 1,024 is a 16-core server's
# worth with --workers, and keeps `streamer check`, which opens each, to seconds
MAX_STREAMS = 1024


class Config(_Model):
    node: str = Field(default_factory=lambda: _default_node())
    mqtt: MqttConfig = MqttConfig()
    window: WindowConfig = WindowConfig()
    model: ModelConfig = ModelConfig()
    streams: Annotated[list[StreamConfig], Field(min_length=1)]
    http: HttpConfig | None = None
    sinks: SinksConfig = SinksConfig()
    events: EventsConfig | None = None  # absent: no events
    history: HistoryConfig = HistoryConfig()  # the events' store (with events: only)
    snapshots: SnapshotsConfig = SnapshotsConfig()  # with events: or http:
    capture: Literal["thread", "process"] = "process"  # where PyAV and mic: sources run
    ray: RayConfig = RayConfig()  # --engine ray: shards and runners
    shutdown_timeout: Annotated[float, Field(ge=0, le=3600)] = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    _node = field_validator("node")(classmethod(lambda cls, v: _check_id(v)))

    @model_validator(mode="after")
    def _webrtc_needs_http(self) -> Config:
        if self.http is not None:
            return self
        for i, s in enumerate(self.streams):
            for key in ("video", "audio"):
                if getattr(s, key) == "webrtc":
                    raise ValueError(
                        f"streams[{i}].{key}: webrtc needs the HTTP server (http.listen)"
                    )
        return self

    @property
    def webrtc_streams(self) -> list[StreamConfig]:
        return [s for s in self.streams if "webrtc" in (s.video, s.audio)]

    @field_validator("streams", mode="before")
    @classmethod
    def _not_too_many(cls, v: object) -> object:
        if isinstance(v, list) and len(v) > MAX_STREAMS:
            raise ValueError(
                f"{len(v)} streams: a node takes at most {MAX_STREAMS} (run several nodes, "
                "each with a config of its own)"
            )
        return v

    @field_validator("streams")
    @classmethod
    def _unique(cls, v: list[StreamConfig]) -> list[StreamConfig]:
        seen: set[str] = set()
        for i, s in enumerate(v):
            if s.id in seen:
                raise ValueError(f"[{i}].id: duplicate stream id {s.id!r}")
            seen.add(s.id)
        return v


def _default_node() -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])
    return name or "node"


def _field_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _one_line(e: ValidationError) -> ConfigError:
    err = e.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "]" in p))
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required"
    # a validator's message may itself start with a sub-path like "[1].id: ..."
    name = _field_name(loc)
    if msg.startswith("[") and "]" in msg:
        sub, _, rest = msg.partition(": ")
        if rest:
            name, msg = name + sub, rest
    elif re.match(r"^[A-Za-z_][\w.\[\]]*: ", msg):  # a model validator naming a field
        sub, _, rest = msg.partition(": ")
        name, msg = f"{name}.{sub}" if name else sub, rest
    return ConfigError(name or "config", msg.replace("\n", " "))


def parse_config(data: Any) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("config", "expected a mapping at the top level")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise _one_line(e) from None


def _apply_set(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError("--set", f"expected dotted.key=value, got {assignment[:100]!r}")
    if len(key) > 200:  # the messages below repeat the key
        raise ConfigError("--set", f"a key of {len(key)} characters (at most 200)")
    value = set_value(key, raw)
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        digits = part.isascii() and part.isdigit() and len(part) <= 9
        idx: int | str = int(part) if digits else part
        if isinstance(node, list):
            if not isinstance(idx, int) or idx >= len(node):
                raise ConfigError("--set", f"{key}: no such list element {part!r}")
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError("--set", f"{key}: {'.'.join(parts[:i])} is not a mapping")


def secret_warnings(cfg: Config) -> list[str]:
    """One line per secret file that other users can read (the owner alone should)."""
    files = [("mqtt.password_file", cfg.mqtt.password_file)]
    if cfg.http is not None:
        files.append(("http.token_file", cfg.http.token_file))
    out = []
    for field, path in files:
        if path is None:
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o077:
            out.append(
                f"{field}: {path} is readable by other users (mode {mode & 0o777:o}); chmod 600 it"
            )
    return out


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The validated config of the YAML file at ``path`` (read within the bounds of
    :mod:`streamer.configfile`) with ``--set`` overrides applied."""
    data = read_config_file(Path(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config", "expected a mapping at the top level")
    for s in overrides:
        _apply_set(data, s)
    return parse_config(data)
