"""Hostile config files: whatever the bytes, ``streamer check`` exits 2 with one line naming
the field, quickly and in bounded memory (run under a 2 GiB address-space limit, so an
allocation of gigabytes fails loudly instead of passing slowly)."""

from __future__ import annotations

import asyncio
import codecs
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from streamer import check as check_module
from streamer.config import MAX_STREAMS, load_config
from streamer.configfile import MAX_BYTES, MAX_DEPTH, load_yaml
from streamer.errors import ConfigError

GOOD = "streams: [{id: s1, video: 'synthetic:pattern'}]\n"
LIMIT_AS = 2 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def check(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", "check", str(path), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, preexec_fn=_limit_memory,
    )  # fmt: skip


def one_line(p: subprocess.CompletedProcess[str], field: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout[-1000:], p.stderr[-3000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr[-3000:]
    assert lines[0].startswith(f"streamer: error: {field}: "), lines[0][:300]
    assert len(lines[0]) < 400, lines[0][:300]
    return lines[0]


DIGITS = "1" * 100_001
HOSTILE: list[tuple[str, bytes, str, str]] = [
    # (name, file content, the field named, a piece of the problem)
    ("utf-16", GOOD.encode("utf-16"), "config", "UTF-16"),
    ("utf-16 without a BOM", GOOD.encode("utf-16-le"), "config", "UTF-16"),
    ("utf-32", codecs.BOM_UTF32_LE + GOOD.encode("utf-32-le"), "config", "UTF-16 or UTF-32"),
    ("latin-1", "node: café\n".encode("latin-1") + GOOD.encode(), "config", "not UTF-8"),
    ("flow nested 50,000 deep", b"streams: " + b"[" * 50_000 + b"]" * 50_000, "streams", "deep"),
    ("block nested 40 deep", b"streams:\n" + b"- " * 40 + b"x\n", "streams", "deep"),
    (
        "100,001-digit integer",
        f"mqtt: {{keepalive: {DIGITS}}}\n{GOOD}".encode(),
        "mqtt.keepalive",
        "100001 characters",
    ),  # fmt: skip
    (
        "100,001-digit stream field",
        f"streams: [{{id: s1, loop: {DIGITS}}}]\n".encode(),
        "streams[0].loop",
        "integer",
    ),  # fmt: skip
    ("a date that is not", b"node: 2001-02-30\n" + GOOD.encode(), "node", "not a valid"),
    ("an int tag on text", b"mqtt: {qos: !!int one}\n" + GOOD.encode(), "mqtt.qos", "not a valid"),
    ("over 1 MiB", GOOD.encode() + b"#" * MAX_BYTES, "config", "larger than 1024 KiB"),
    (
        "synthetic 100000x100000",
        b"streams: [{id: s1, video: 'synthetic:pattern?size=100000x100000'}]",
        "streams[0].video",
        "at most 7680x4320",
    ),  # fmt: skip
    (
        "synthetic 16000x16000",
        b"streams: [{id: s1, video: 'synthetic:pattern?size=16000x16000'}]",
        "streams[0].video",
        "at most 7680x4320",
    ),  # fmt: skip
    (
        "synthetic size of 5,000 digits",
        b"streams: [{id: s1, video: 'synthetic:pattern?size=" + b"9" * 5000 + b"x2'}]",
        "streams[0].video",
        "WIDTHxHEIGHT",
    ),  # fmt: skip
    (
        "synthetic fps 1e6",
        b"streams: [{id: s1, video: 'synthetic:pattern?fps=1e6'}]",
        "streams[0].video",
        "fps must be at most 120",
    ),  # fmt: skip
    (
        "synthetic fps 1e-300",
        b"streams: [{id: s1, video: 'synthetic:pattern?fps=1e-300'}]",
        "streams[0].video",
        "fps must be at least",
    ),  # fmt: skip
    (
        "synthetic seed 1e400",
        b"streams: [{id: s1, video: 'synthetic:pattern?seed=1e400'}]",
        "streams[0].video",
        "seed must be at most",
    ),  # fmt: skip
    (
        "10,000 streams",
        yaml.safe_dump({"streams": [{"id": f"s{i}", "video": "synthetic:pattern"}
                                    for i in range(10_000)]}).encode(),
        "streams",
        "10000 streams: a node takes at most 1024",
    ),  # fmt: skip
    (
        "synthetic freq 1e400",
        b"streams: [{id: s1, audio: 'synthetic:tone?freq=1e400'}]",
        "streams[0].audio",
        "freq must be at most",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("name", "content", "field", "problem"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_a_hostile_file_is_one_line_naming_the_field(
    tmp_path: Path, name: str, content: bytes, field: str, problem: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    line = one_line(check(path), field)
    assert problem in line, line[:300]


@pytest.mark.parametrize(
    ("assignment", "problem"),
    [
        (f"window.length={DIGITS}", "window.length: an integer of 100001 characters"),
        ("window.length=" + "[" * 20_000, "deep"),
        ("streams." + "9" * 100 + ".id=x", "no such list element"),
        ("streams." + "9" * 5000 + ".id=x", "a key of 5011 characters"),
        ("streams.\u00b2.id=x", "no such list element"),  # a digit to isdigit(), not to int()
    ],
    ids=["100,001 digits", "nested 20,000 deep", "index of 100 digits", "key of 5,000 digits",
         "superscript index"],  # fmt: skip
)
def test_a_hostile_set_is_one_line(tmp_path: Path, assignment: str, problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    line = one_line(check(path, "--set", assignment), "--set")
    assert problem in line, line[:300]


def test_the_limits_leave_room_for_real_configs(tmp_path: Path) -> None:
    deep = "streams: [{id: s1, text: " + "[" * (MAX_DEPTH - 3) + "a" + "]" * (MAX_DEPTH - 3) + "}]"
    assert load_yaml(deep)["streams"][0]["id"] == "s1"  # the nesting limit is not hit...
    with pytest.raises(ConfigError, match=r"^streams: nested more than 32 levels deep"):
        load_yaml(deep.replace("[a]", "[[a]]"))  # ...one more level is
    assert load_yaml("a: &x {b: 1}\nc: *x\nd: 0x10\ne: 1_000\n") == {
        "a": {"b": 1}, "c": {"b": 1}, "d": 16, "e": 1000,
    }  # fmt: skip
    path = tmp_path / "bom.yaml"
    path.write_bytes(codecs.BOM_UTF8 + GOOD.encode())  # a UTF-8 BOM is fine
    assert load_config(path).streams[0].id == "s1"
    many = tmp_path / "many.yaml"  # as many streams as a node takes fit in the size limit
    many.write_text(
        yaml.safe_dump({"streams": [{"id": f"s{i}", "video": "synthetic:"}
                                    for i in range(MAX_STREAMS)]})
    )  # fmt: skip
    assert len(load_config(many).streams) == MAX_STREAMS


async def test_check_opens_sources_concurrently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each source's open waits until all four are opening: one at a time, each would time
    out; concurrently, all four open. (So N sources that time out cost N / 32 timeouts.)"""
    import streamer.sources.factory as factory

    barrier = asyncio.Barrier(4)
    real = factory.open_sources

    def gated(*args: object, **kwargs: object) -> list[object]:
        sources = real(*args, **kwargs)  # type: ignore[arg-type]
        for src in sources:
            opened = src.open

            async def open_after_all(opened: object = opened) -> None:
                await barrier.wait()
                await opened()  # type: ignore[operator]

            src.open = open_after_all  # type: ignore[method-assign]
        return sources  # type: ignore[return-value]

    monkeypatch.setattr(factory, "open_sources", gated)
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {"streams": [{"id": f"s{i}", "video": "synthetic:pattern"} for i in range(4)]}
        )
    )
    rc = await check_module.check(str(path), [], per_source_s=5.0)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count(": ok (synthetic:pattern") == 4, out
    assert [line.split()[0] for line in out.splitlines()[2:]] == [f"streams[{i}]" for i in range(4)]
