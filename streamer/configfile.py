"""Reading the YAML of a config file or a ``--set`` value, within bounds.

Whatever the file holds, the result is data or one :class:`~streamer.errors.ConfigError`
naming the field, in bounded time and memory:

    size      at most MAX_BYTES (1 MiB; 10,000 streams take ~400 KiB)
    encoding  UTF-8 (a UTF-8 BOM is allowed); UTF-16/32 and other bytes are refused
    nesting   at most MAX_DEPTH collections deep, checked on the event stream before
              anything recursive (the composer, pydantic) sees the document
    integers  at most MAX_INT_DIGITS characters (Python refuses to convert more than
              4,300 digits, and no field needs more than ten)
    values    a scalar its tag cannot construct (``!!int x``, the date ``2001-02-30``)

libyaml does the parsing when PyYAML was built with it (5x faster than pure Python).
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import yaml

from streamer.errors import ConfigError

MAX_BYTES = 1 << 20
MAX_DEPTH = 32  # a valid config goes 3 deep (streams[0].text); merges and lists add a few
MAX_INT_DIGITS = 64

_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_INT_TAG = "tag:yaml.org,2002:int"


class _Bad(Exception):
    """A scalar that cannot be constructed; becomes a ConfigError naming its field."""

    def __init__(self, node: yaml.Node, problem: str) -> None:
        super().__init__(problem)
        self.node = node
        self.problem = problem


class _Loader(_BASE):  # type: ignore[misc, valid-type]
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as e:
            tag = str(node.tag).rsplit(":", 1)[-1]
            raise _Bad(node, f"not a valid {tag}: {' '.join(str(e).split())[:100]}") from None

    def construct_int(self, node: yaml.ScalarNode) -> Any:
        if len(str(node.value)) > MAX_INT_DIGITS:
            problem = f"an integer of {len(node.value)} characters (at most {MAX_INT_DIGITS})"
            raise _Bad(node, problem)
        return self.construct_yaml_int(node)


_Loader.add_constructor(_INT_TAG, _Loader.construct_int)


def _line(mark: Any) -> str:
    return f" at line {mark.line + 1}" if mark is not None else ""


def _check_depth(text: str) -> None:
    """Walk the events (no recursion) and refuse collections nested too deep, naming the
    top-level key they are under."""
    top_key: list[str | None] = [None]
    try:
        _walk_depth(text, top_key)
    except yaml.YAMLError as e:
        if "maximum nesting depth" not in str(e):  # libyaml's own limit (1000) came first
            raise
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(
            top_key[0] or "config", f"nested more than {MAX_DEPTH} levels deep{_line(mark)}"
        ) from None


def _walk_depth(text: str, top_key: list[str | None]) -> None:
    depth = 0
    in_mapping = is_key = False  # the top node is a mapping; the next depth-1 node a key
    for event in yaml.parse(text, Loader=_BASE):
        if depth == 1 and in_mapping and isinstance(event, yaml.NodeEvent):
            if is_key:
                top_key[0] = str(event.value) if isinstance(event, yaml.ScalarEvent) else None
            is_key = not is_key
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth == 1:
                in_mapping = is_key = isinstance(event, yaml.MappingStartEvent)
            if depth > MAX_DEPTH:
                raise ConfigError(
                    top_key[0] or "config",
                    f"nested more than {MAX_DEPTH} levels deep{_line(event.start_mark)}",
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _paths(root: yaml.Node) -> dict[int, str]:
    """id(node) -> its field name (``streams[0].video``), for the nodes of a document."""
    out = {id(root): ""}
    todo = [root]
    while todo:
        node = todo.pop()
        base = out[id(node)]
        children: list[tuple[str, yaml.Node]] = []
        if isinstance(node, yaml.SequenceNode):
            children = [(f"{base}[{i}]", child) for i, child in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            for key, child in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                children.append((f"{base}.{name}" if base else name, child))
        for name, child in children:
            if id(child) not in out:  # an alias: its anchor's name stands
                out[id(child)] = name
                todo.append(child)
    return out


def _load(text: str) -> Any:
    """Like ``yaml.safe_load`` within the limits; yaml.YAMLError for bad syntax, and
    ConfigError (naming the field, or ``config``) for what exceeds a limit."""
    _check_depth(text)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        paths = _paths(node)
        try:
            return loader.construct_document(node)
        except _Bad as e:
            name = paths.get(id(e.node)) or "config"
            raise ConfigError(name, f"{e.problem}{_line(e.node.start_mark)}") from None
    finally:
        loader.dispose()


def load_yaml(text: str) -> Any:
    """The data of one YAML document; ConfigError naming the field (or ``config``) when
    it is not one, or exceeds the limits in the module docstring."""
    try:
        return _load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError("config", f"invalid YAML{_line(mark)}") from None


def set_value(key: str, raw: str) -> Any:
    """The value of ``--set key=raw``: its YAML, or the text itself when it is not YAML."""
    if not raw:
        return ""
    try:
        return _load(raw)
    except yaml.YAMLError:
        return raw
    except ConfigError as e:
        name = key if e.field == "config" else f"{key}.{e.field}"
        raise ConfigError("--set", f"{name}: {e.problem}") from None


def read_config_file(path: Path) -> Any:
    """The YAML data of the config file at ``path`` (None when it is empty)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        problem = f"{path} is larger than {MAX_BYTES // 1024} KiB (a config is a few KiB)"
        raise ConfigError("config", problem)
    if raw.startswith(_WIDE_BOMS) or b"\x00" in raw:
        raise ConfigError("config", f"{path} is UTF-16 or UTF-32 text: save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        problem = f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line})"
        raise ConfigError("config", problem) from None
    return load_yaml(text)
