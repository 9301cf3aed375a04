"""The outbox spool: what is kept, in order, atomically replaced, one process per directory;
the journal that keeps it in step with the outbox while the broker is away."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import pytest

from streamer.errors import ConfigError
from streamer.sinks.outbox import Message, Outbox
from streamer.sinks.spool import Journal, Spool, SpoolError


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
        assert spool.save(list(enumerate(msgs))) == 2
        assert spool.load() == [msgs[0], msgs[3]]
        assert spool.load() == [msgs[0], msgs[3]]  # loading does not consume
        assert spool.save([(7, msgs[3])]) == 1
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


def pred(i: int) -> Message:
    return Message("p/n/a/prediction", str(i).encode(), 1)


async def test_the_journal_writes_what_stays_unacked_for_a_tick_and_deletes_what_was_acked(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    spool.open()
    try:
        outbox = Outbox(100)
        journal = Journal(spool, outbox)
        for i in range(3):
            outbox.put(pred(i))
        outbox.put(Message("p/n/a/label", b"7", 1, retain=True))  # retained: never kept
        await journal.tick()
        assert spool.load() == [] and journal.writes == 0  # queued since this tick only
        outbox.put(pred(3))
        await journal.tick()  # 0-2 have waited a tick: on disk; 3 not yet
        assert [m.payload for m in spool.load()] == [b"0", b"1", b"2"]
        assert journal.on_disk(2) and not journal.on_disk(4)
        outbox.confirm_through(1)  # the broker acked 0 and 1
        await journal.tick()
        assert [m.payload for m in spool.load()] == [b"2", b"3"]
        outbox.confirm_through(4)
        await journal.tick()
        assert spool.load() == []
        writes = journal.writes
        await journal.tick()  # nothing pending, nothing stale: no transaction at all
        assert journal.writes == writes
    finally:
        spool.close()


async def test_a_failing_disk_is_counted_and_the_outbox_keeps_everything(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    try:
        outbox = Outbox(100)
        journal = Journal(spool, outbox)
        outbox.put(pred(0))
        await journal.tick()
        (tmp_path / "outbox.sqlite3").unlink()
        (tmp_path / "outbox.sqlite3").mkdir()  # sqlite cannot open a directory
        await journal.tick()
        assert journal.failures == 1 and len(outbox) == 1 and not journal.on_disk(0)
        with pytest.raises(SpoolError, match="outbox.sqlite3"):
            spool.save([(0, pred(0))])
    finally:
        spool.close()


async def test_a_tick_cancelled_mid_write_leaves_the_write_to_stop_and_its_failure_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown cancels the journal's task while a write that will fail is in progress:
    stop() still waits for it (so the final save comes last), and its failure is read
    (no 'Future exception was never retrieved')."""
    spool = Spool(tmp_path)
    spool.open()
    started, release = threading.Event(), threading.Event()

    def failing_sync(below: int, rows: object) -> None:
        started.set()
        release.wait(10)
        raise SpoolError("the disk went read-only")

    monkeypatch.setattr(spool, "sync", failing_sync)
    unread: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: unread.append(ctx))
    try:
        outbox = Outbox(100)
        journal = Journal(spool, outbox)
        outbox.put(pred(0))
        await journal.tick()  # queued since this tick only: nothing to write yet
        tick = asyncio.create_task(journal.tick())
        assert await asyncio.to_thread(started.wait, 10)
        tick.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tick
        stopping = asyncio.create_task(journal.stop())
        done, _ = await asyncio.wait({stopping}, timeout=0.2)
        assert not done  # it waits for the write in progress
        release.set()
        await asyncio.wait_for(stopping, 10)
        gc.collect()
        assert unread == []
    finally:
        release.set()
        loop.set_exception_handler(None)
        spool.close()
