"""The outbox spool: what is kept, in order, atomically replaced, one process per directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.errors import ConfigError
from streamer.sinks.outbox import Message
from streamer.sinks.spool import Spool


def test_keeps_predictions_in_order_and_replaces_them_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    try:
        msgs = [
            Message("p/n/a/prediction", b"1", 1),
            Message("p/n/a/label", b"7", 1, retain=True),  # state of the old run: not kept
            Message("p/n/stats", b"{}", 0),  # QoS 0: not kept
            Message("p/n/b/prediction", b"\x00\xff", 2),
        ]
        assert spool.save(msgs) == 2
        assert spool.load() == [msgs[0], msgs[3]]
        assert spool.load() == [msgs[0], msgs[3]]  # loading does not consume
        assert spool.save([msgs[3]]) == 1
        assert spool.load() == [msgs[3]]
        assert spool.save([]) == 0 and spool.load() == []
    finally:
        spool.close()


def test_one_process_per_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    try:
        with pytest.raises(ConfigError, match="in use by another streamer process"):
            Spool(tmp_path).open()
    finally:
        first.close()
    again = Spool(tmp_path)
    again.open()  # free once the first let go
    again.close()


def test_a_file_where_the_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"mqtt\.outbox_dir"):
        Spool(tmp_path / "f" / "spool").open()
