"""Watermarks: where confirmed rows move the cursor, ties, failures, unordered files, a killed run."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from connector.delta.watermark import Watermarks, decode, encode
from connector.records import RowRef


def refs(*rows: int) -> list[RowRef]:
    return [RowRef("src", r, f"id={r}") for r in rows]


def take(marks: Watermarks, rows: list[tuple[int, int]], *, ordered: bool = True) -> list[bool]:
    """Rows as (id, cursor) pairs, read in one chunk."""
    mark = marks.mark("s", "updated_at", ordered=ordered)
    return mark.take(refs(*(r for r, _ in rows)), [v for _, v in rows], [f"id={r}" for r, _ in rows], below=not ordered)


def confirmed(path: Path, rows: list[tuple[int, int]]) -> None:
    """A run that read `rows` (ordered) and had them all confirmed, then stopped without finishing."""
    marks = Watermarks(path)
    take(marks, rows)
    marks.settle("s", refs(*(r for r, _ in rows)), "delivered")
    marks.close()


def test_values_round_trip_through_their_text() -> None:
    for v in (datetime(2024, 5, 1, 10, tzinfo=UTC), datetime(2024, 5, 1, 10), date(2024, 5, 1), 42, 2.5,
              Decimal("12.50"), "2024-05-01"):  # fmt: skip
        assert decode(encode(v)[0]) == v
    assert encode(datetime(2024, 5, 1, 12, tzinfo=UTC))[1] > encode(datetime(2024, 5, 1, 11, tzinfo=UTC))[1]


def test_all_confirmed_moves_to_the_highest_value_and_ties_are_neither_lost_nor_resent(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    marks = Watermarks(path)
    assert take(marks, [(1, 10), (2, 20), (3, 20)]) == [True] * 3
    marks.settle("s", refs(1, 2, 3), "delivered")
    marks.mark("s", "updated_at", ordered=True).finish(True)
    marks.close()

    marks = Watermarks(path)
    assert marks.stored("s", "updated_at") == 20
    # The query reads cursor >= 20 again: rows 2 and 3 were confirmed there, row 4 is new at the same value.
    assert take(marks, [(2, 20), (3, 20), (4, 20), (5, 30)]) == [False, False, True, True]
    marks.settle("s", refs(4, 5), "delivered")
    marks.mark("s", "updated_at", ordered=True).finish(True)
    marks.close()
    assert Watermarks(path).stored("s", "updated_at") == 30


def test_a_failed_row_holds_the_watermark_and_only_it_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    marks = Watermarks(path)
    take(marks, [(1, 10), (2, 20), (3, 30), (4, 40)])
    marks.settle("s", refs(1, 3, 4), "delivered")
    marks.settle("s", refs(2), "failed")
    marks.mark("s", "updated_at", ordered=True).finish(True)
    marks.close()
    marks = Watermarks(path)
    assert marks.stored("s", "updated_at") == 20
    # Re-read from 20: only row 2 goes; rows 3 and 4 were confirmed above the watermark.
    assert take(marks, [(2, 20), (3, 30), (4, 40)]) == [True, False, False]
    # Row 3 changed since (a new cursor value): it is read again.
    assert take(marks, [(3, 35)]) == [True]


def test_rejected_and_unchanged_rows_are_done_unsent_ones_are_not(tmp_path: Path) -> None:
    marks = Watermarks(tmp_path / "s.sqlite")
    take(marks, [(1, 10), (2, 20), (3, 30)])
    marks.settle("s", refs(1), "rejected")
    marks.settle("s", refs(2), "skipped")
    assert marks.mark("s", "updated_at", ordered=True).value == 30  # frontier: rows below 30 all read and done
    marks.settle("s", refs(3), "failed")
    marks.mark("s", "updated_at", ordered=True).finish(True)
    assert marks.mark("s", "updated_at", ordered=True).value == 30


def test_an_ordered_read_moves_while_it_runs_an_unordered_one_only_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    marks = Watermarks(path)
    take(marks, [(1, 10), (2, 20)], ordered=True)
    marks.settle("s", refs(1, 2), "delivered")
    # Killed here (no finish, no close): rows below the last value read are settled, the tie at 20 is in D.
    assert Watermarks(path).stored("s", "updated_at") == 20

    files = Watermarks(tmp_path / "f.sqlite")
    take(files, [(2, 20), (1, 10)], ordered=False)
    files.settle("s", refs(1, 2), "delivered")
    assert Watermarks(tmp_path / "f.sqlite").stored("s", "updated_at") is None  # an unread row may be lower
    files.mark("s", "updated_at", ordered=False).finish(True)
    assert Watermarks(tmp_path / "f.sqlite").stored("s", "updated_at") == 20


def test_files_drop_rows_under_the_watermark_and_null_cursors_after_the_first_run(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    marks = Watermarks(path)
    mark = marks.mark("s", "updated_at", ordered=False)
    assert mark.take(refs(1, 2), [None, 5], ["a", "b"], below=True) == [True, True]
    marks.settle("s", refs(1, 2), "delivered")
    mark.finish(True)
    marks.close()
    mark = Watermarks(path).mark("s", "updated_at", ordered=False)
    assert mark.take(refs(1, 2, 3, 4), [None, 5, 4, 6], ["a", "b", "c", "d"], below=True) == [False, False, False, True]


def test_read_only_runs_filter_but_write_nothing_and_full_reads_everything(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    marks = Watermarks(path)
    take(marks, [(1, 10)])
    marks.settle("s", refs(1), "delivered")
    marks.mark("s", "updated_at", ordered=True).finish(True)
    marks.close()
    dry = Watermarks(path, read_only=True)
    assert take(dry, [(1, 10), (2, 11)]) == [False, True]
    dry.settle("s", refs(2), "delivered")
    dry.mark("s", "updated_at", ordered=True).finish(True)
    dry.close()
    assert Watermarks(path).stored("s", "updated_at") == 10
    full = Watermarks(path, full=True)
    assert full.stored("s", "updated_at") is None and take(full, [(1, 10)]) == [True]
    assert Watermarks(tmp_path / "none.sqlite", read_only=True).stored("s", "updated_at") is None


def test_a_new_cursor_column_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    confirmed(path, [(1, 10)])
    marks = Watermarks(path)
    assert marks.stored("s", "changed_at") is None
    mark = marks.mark("s", "changed_at", ordered=True)
    assert mark.take(refs(1), [10], ["id=1"], below=False) == [True]


def test_a_cursor_that_changes_type_is_a_clear_error(tmp_path: Path) -> None:
    from connector.errors import SourceError

    path = tmp_path / "s.sqlite"
    confirmed(path, [(1, 10)])
    mark = Watermarks(path).mark("s", "updated_at", ordered=False)
    with pytest.raises(SourceError, match="changed type"):
        mark.take(refs(2), [datetime(2024, 1, 1, tzinfo=UTC)], ["id=2"], below=True)


def test_a_stopped_full_run_leaves_no_row_done_from_before_it(tmp_path: Path) -> None:
    """--full starts afresh: a row done at the old watermark is sent again by it, and if the --full run stops
    before reaching that row (its watermark then lies below it), the next run must read and send it, not skip
    it as done (found by a trial: after an interrupted --full, the row at the old watermark was never resent)."""
    path = tmp_path / "s.sqlite"
    marks = Watermarks(path)
    take(marks, [(1, 10), (2, 20), (3, 30)])
    marks.settle("s", refs(1, 2, 3), "delivered")
    marks.mark("s", "updated_at", ordered=True).finish(True)
    marks.close()
    assert Watermarks(path).stored("s", "updated_at") == 30  # row 3 is done at 30

    full = Watermarks(path, full=True)
    assert take(full, [(1, 10), (2, 20)]) == [True, True]  # stopped after two rows
    full.settle("s", refs(1), "delivered")
    full.mark("s", "updated_at", ordered=True).finish(False)
    full.close()

    again = Watermarks(path)
    start = again.stored("s", "updated_at")
    assert start is not None and start <= 20
    assert take(again, [(2, 20), (3, 30)]) == [True, True]  # row 3 is read and sent again
    again.close()
