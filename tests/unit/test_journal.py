"""The run journal: records round-trip, a torn tail is detected and cut off, a record is on disk before
`sending()` returns, and a write failure stops the sending."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from connector.delivery.journal import JOURNAL_FILE, Journal, _rows, decode, encode, read_journal
from connector.errors import JournalError
from connector.records import Chunk, MappedChunk

HEADER = {"run_id": "r1", "pipeline": "p", "attempt": 1, "started": "2026-01-01T00:00:00+00:00"}


def mapped(file: str, rows: list[int]) -> MappedChunk:
    """A chunk of `rows` (row numbers) of `file`, every row mapped to one object."""
    table = pa.table({"user_id": [f"u{r}" for r in rows]})
    chunk = Chunk(file, table, list(rows))
    n = len(rows)
    return MappedChunk("events", chunk, [{"external_id": f"u{r}"} for r in rows], list(range(n)),
                       [f"external_id:u{r}" for r in rows])  # fmt: skip


def test_records_round_trip_in_order(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    m = mapped("a.csv", [2, 3, 4, 5])
    j = Journal(path, HEADER)
    rid = j.sending("events", m, [0, 1, 2])
    j.delivered(rid, m, [1], dup=True)
    j.outcome("events", m, [1], "R", "braze.events", "bad")
    j.outcome("events", m, [3], "U", None, "dropped")
    j.resent("events", "a.csv", [9])
    j.close(exit_code=1)
    lines = read_journal(path)
    assert lines.torn_bytes == 0 and lines.valid_bytes == path.stat().st_size
    recs = lines.records
    assert recs[0]["k"] == "run" and recs[0]["run_id"] == "r1" and recs[0]["v"] == 1
    assert recs[1] == {"k": "file", "i": 0, "stream": "events", "file": "a.csv"}
    assert recs[2] == ["s", rid, 0, [2, 3, 4]]
    assert recs[3] == ["d", rid, 1, [3]]
    assert recs[4] == ["o", 0, "R", [3], "braze.events", "bad", 0]
    assert recs[5] == ["o", 0, "U", [5], None, "dropped", 0]
    assert recs[6] == ["p", 0, [9]]
    assert recs[7] == {"k": "end", "exit_code": 1}


def test_a_torn_tail_is_left_out_and_cut_off_by_the_next_attempt(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    m = mapped("a.csv", [2, 3])
    j = Journal(path, HEADER)
    j.sending("events", m, [0, 1])
    j.close()
    whole = path.stat().st_size
    with path.open("ab") as fh:
        fh.write(encode(["s", 2, 0, [7, 8, 9]])[:-6])  # the machine stopped mid-write
    lines = read_journal(path)
    assert len(lines.records) == 3 and lines.valid_bytes == whole and lines.torn_bytes > 0

    j2 = Journal(path, {**HEADER, "attempt": 2}, keep_bytes=lines.valid_bytes)
    j2.sending("events", m, [1])
    j2.close()
    again = read_journal(path)
    assert again.torn_bytes == 0
    assert [r["attempt"] for r in again.records if isinstance(r, dict) and r["k"] == "run"] == [1, 2]
    assert again.records[-1] == ["s", 1, 0, [3]]


def test_a_line_with_a_wrong_checksum_ends_the_readable_journal(tmp_path: Path) -> None:
    good = encode(["s", 1, 0, [2]])
    assert decode(good) == ["s", 1, 0, [2]]
    flipped = good.replace(b"[2]", b"[3]")
    assert decode(flipped) is None
    assert decode(b"not a record\n") is None and decode(good[:-1]) is None
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(encode({"k": "run"}) + flipped + good)
    lines = read_journal(path)
    assert lines.records == [{"k": "run"}] and lines.torn_bytes == len(flipped) + len(good)


def test_a_request_record_is_on_disk_when_sending_returns(tmp_path: Path) -> None:
    """Many senders at once (group commit): each finds its own record in the file as soon as it returns."""
    path = tmp_path / JOURNAL_FILE
    j = Journal(path, HEADER)
    seen: list[bool] = []
    lock = threading.Lock()

    def sender(k: int) -> None:
        for i in range(20):
            row = k * 1000 + i
            rid = j.sending("events", mapped("a.csv", [row]), [0])
            text = path.read_bytes()  # another reader, as after kill -9
            with lock:
                seen.append(encode(["s", rid, 0, [row]]) in text)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    j.close()
    assert len(seen) == 160 and all(seen)
    assert len([r for r in read_journal(path).records if isinstance(r, list)]) == 160


def test_a_write_failure_stops_sending_and_outcomes_are_dropped_quietly(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    j = Journal(tmp_path / JOURNAL_FILE, HEADER)
    m = mapped("a.csv", [2])
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, j._fd)  # every later write fails with ENOSPC, as on a full disk
    os.close(full)
    with pytest.raises(JournalError, match="cannot be written"):
        j.sending("events", m, [0])
    j.outcome("events", m, [0], "N")  # no exception into the writer's accounting
    with pytest.raises(JournalError):
        j.sending("events", m, [0])
    j.close(exit_code=2)


def test_a_journal_that_cannot_be_created_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot be written"):
        Journal(tmp_path / "missing-folder" / JOURNAL_FILE, HEADER)


@pytest.mark.parametrize("numbers", [range(1, 1001), range(5, 2005, 2), list(range(7, 1007)), [9, 3] * 500])
@pytest.mark.parametrize("indices", [range(1000), range(10, 1000), range(0, 1000, 3), list(range(0, 1000, 2))])
def test_request_rows_are_the_objects_source_rows_whatever_their_shape(numbers: Any, indices: Any) -> None:
    """The row numbers a request record names: a slice when positions and rows are consecutive ranges,
    else one lookup per object; the same numbers either way."""
    mapped: Any = SimpleNamespace(chunk=SimpleNamespace(row_numbers=numbers), indices=indices)
    n = len(indices)
    for tokens in ([], [0], list(range(min(75, n))), list(range(n - 5, n)), list(range(3, 40, 2)), [5, 4, 6],
                   [2, 3, 3], range(2, 50)):  # fmt: skip
        assert _rows(mapped, tokens) == [numbers[indices[j]] for j in tokens]


def test_requests_leaving_together_share_one_flush_and_their_answers_one_append(tmp_path: Path) -> None:
    """leaving_many (a group of first attempts, delivery/volleys.py): one record per request, in order, with
    one gate that passes once they are all on disk; delivered_many: the 'd' records delivered() would write."""
    path = tmp_path / JOURNAL_FILE
    a, b = mapped("a.csv", [2, 3, 4, 5]), mapped("b.csv", [7, 8])
    j = Journal(path, HEADER)
    first = j.sending("events", a, [0])
    rids, gate = j.leaving_many([("events", a, [1, 2]), ("events", b, [0, 1]), ("events", a, [3])])
    assert rids == [first + 1, first + 2, first + 3]
    gate()  # returns once the three records are durable (they share one flush)
    on_disk = read_journal(path).records
    assert ["s", rids[0], 0, [3, 4]] in on_disk and ["s", rids[1], 1, [7, 8]] in on_disk
    assert ["s", rids[2], 0, [5]] in on_disk
    j.delivered_many(rids[:2])
    j.delivered(rids[2], a)
    j.close()
    recs = read_journal(path).records
    assert recs[-3:] == [["d", rids[0], 0, []], ["d", rids[1], 0, []], ["d", rids[2], 0, []]]


def test_a_groups_records_are_synced_soon_and_at_once_when_someone_waits(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """leaving_many's records need not be on disk before their slot comes (SOON_S), so several passes share
    one fdatasync; a gate called before that hurries the flush: it returns once the record is durable."""
    from connector.delivery import journal

    monkeypatch.setattr(journal, "SOON_S", 600.0)  # only the waiting gate can bring the flush forward
    path = tmp_path / JOURNAL_FILE
    m = mapped("a.csv", [2, 3, 4, 5])
    j = Journal(path, HEADER)
    synced: list[int] = []
    real = os.fdatasync
    try:
        os.fdatasync = lambda fd: (synced.append(fd), real(fd))[1]  # type: ignore[assignment]
        rids, gate = j.leaving_many([("events", m, [0, 1]), ("events", m, [2])])
        more, gate2 = j.leaving_many([("events", m, [3])])
        gate2()  # waits: hurried, not SOON_S later
        assert gate.passed() and gate2.passed()  # type: ignore[attr-defined]
        on_disk = read_journal(path).records
        assert ["s", rids[0], 0, [2, 3]] in on_disk and ["s", more[0], 0, [5]] in on_disk
        assert len(synced) == 1  # the two groups' records in one flush
    finally:
        os.fdatasync = real  # type: ignore[assignment]
        j.close()
