"""Delta sync's fast path: source prints of rows (delta/rowprint.py) and the state that keeps them with the
confirmed records (delta/prints.py, stores.py, keyindex.py): a row is taken only when its print is the one
stored at its user's last confirmed delivery, and never for what the object comparison would send."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from connector.config import Stream
from connector.delta import DeltaState
from connector.delta.rowprint import RowPrint, row_print, why_not
from connector.delta.stores import SqliteStore
from connector.records import Chunk, MappedChunk


def table(**overrides: Any) -> pa.Table:
    cols: dict[str, Any] = {
        "user_id": pa.array(["u1", "u2", "u3", "u4"]),
        "name": pa.array(["Ann", "Bob", "", None]),
        "age": pa.array([31, None, 40, 22], pa.int32()),
        "ltv": pa.array([1.5, -0.0, 0.0, None]),
        "at": pa.array([1, 2, 3, None], pa.timestamp("us", tz="UTC")),
        "vip": pa.array([True, False, None, True]),
    }
    cols.update(overrides)
    return pa.table(cols)


PRINT = RowPrint(["user_id", "name", "age", "ltv", "at", "vip"], b"seed")


def test_a_rows_print_depends_on_its_own_cells_only() -> None:
    whole = PRINT.prints(table())
    assert whole is not None and len(set(whole.tolist())) == 4 and 0 not in whole
    parts = [PRINT.prints(table().slice(i, 1)) for i in range(4)]  # another chunking, other neighbours
    assert np.concatenate(parts).tolist() == whole.tolist()
    reordered = PRINT.prints(table().select(["vip", "at", "ltv", "age", "name", "user_id"]))
    assert reordered is not None and reordered.tolist() == whole.tolist()


@pytest.mark.parametrize("column, values", [
    ("name", ["Ann", "Bob", None, None]),  # empty string -> null
    ("name", ["Ann", "Bob", "x", None]),
    ("age", [31, 0, 40, 22]),  # null -> 0
    ("ltv", [1.5, 0.0, 0.0, None]),  # -0.0 -> 0.0
    ("at", [1, 2, 3, 0]),
    ("vip", [True, False, False, True]),
])  # fmt: skip
def test_a_changed_cell_changes_its_rows_print_and_no_other(column: str, values: list[Any]) -> None:
    before = PRINT.prints(table())
    after = PRINT.prints(table(**{column: pa.array(values, table().schema.field(column).type)}))
    assert before is not None and after is not None
    differs = (before != after).tolist()
    assert sum(differs) == 1


def test_texts_that_join_alike_differ() -> None:
    """("ab", "c") and ("a", "bc") join to the same bytes: the lengths tell them apart."""
    rp = RowPrint(["a", "b"], b"seed")
    got = rp.prints(pa.table({"a": ["ab", "a"], "b": ["c", "bc"]}))
    assert got is not None and got[0] != got[1]


def _golden_tables() -> dict[str, pa.Table]:
    import datetime as dt
    import decimal

    utc = dt.UTC
    every = pa.table({
        "s": pa.array(["a", None, "", "héllo", "x" * 40]),
        "ls": pa.array(["A", "B", None, "D", "E"], pa.large_string()),
        "b": pa.array([b"\x00", b"", None, b"zz", b"q"], pa.binary()),
        "d": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-3"), decimal.Decimal("0"), decimal.Decimal("7.25")],
                      pa.decimal128(10, 2)),
        "dict": pa.array(["p", "q", "p", None, "q"]).dictionary_encode(),
        "i": pa.array([1, None, -5, 2**40, 0], pa.int64()),
        "i32": pa.array([1, 2, 3, 4, 5], pa.int32()),
        "f": pa.array([1.5, None, -0.0, float("nan"), 1e300]),
        "bo": pa.array([True, False, None, True, False]),
        "ts": pa.array([dt.datetime(2024, 1, 1, tzinfo=utc), None, dt.datetime(1970, 1, 1, tzinfo=utc),
                        dt.datetime(2030, 5, 5, 1, 2, 3, 456789, tzinfo=utc), dt.datetime(2000, 1, 1, tzinfo=utc)],
                       pa.timestamp("us", tz="UTC")),
        "tsn": pa.array([dt.datetime(2024, 1, d) for d in range(1, 6)], pa.timestamp("ms")),
        "nul": pa.nulls(5),
    })  # fmt: skip
    texts = pa.table({"s": ["a", "bb", "", "ccc", "d"], "t": pa.array(["x", "y", "z", "w", "v"], pa.large_string())})
    return {
        "all": every,
        "chunked": pa.Table.from_batches(every.to_batches(max_chunksize=2)),
        "nonull_text": pa.table({"s": ["a", "bb", "", "ccc", "d"], "t": ["x", "y", "z", "w", "v"], "i": [1, 2, 3, 4, 5]}),
        "nonull_chunked": pa.Table.from_batches(texts.to_batches(max_chunksize=3)),
        "numbers_only": pa.table({"i": [1, None, 3, 4, 5], "f": [0.5, 1.5, None, 2.5, 3.5]}),
    }


GOLDEN = {'all': [-5889258490252725852, -9118024427285659460, 593910732461784719, 5368956668290534109, -4494939709689766011], 'chunked': [-5889258490252725852, -9118024427285659460, 593910732461784719, 5368956668290534109, -4494939709689766011], 'nonull_text': [-4250184354410369939, -297133173135551252, -1099231449000466268, 2935990958123154583, -4780426546236430260], 'nonull_chunked': [9151914402527917724, 6249310668456406602, 6021132187305437016, 6942333261533419906, -8369683955168649614], 'numbers_only': [2056516614654925507, -6862750152172151701, 4031395822179513311, -7638035126224472738, 7298510394914975178]}


def test_prints_are_those_earlier_versions_stored() -> None:
    """A state keeps the prints of earlier runs: the same row must print the same after any change of how
    prints are computed (else FORMAT is bumped). Pinned from the first implementation, for every kind of
    cell, with and without nulls, in one Arrow chunk or several."""
    for name, t in _golden_tables().items():
        got = RowPrint(t.column_names, b"seed-golden").prints(t)
        assert got is not None and got.tolist() == GOLDEN[name], name


def test_date_and_time_of_day_columns_have_prints() -> None:
    """date32 and time32 cells (a PostgreSQL date, a Parquet date) are 32-bit integers, printed as such."""
    import datetime as dt

    rp = RowPrint(["d", "t"], b"seed")
    one = pa.table({"d": [dt.date(2024, 1, 1), None], "t": pa.array([dt.time(1, 2), dt.time(3, 4)], pa.time32("s"))})
    two = pa.table({"d": [dt.date(2024, 1, 2), None], "t": pa.array([dt.time(1, 2), dt.time(3, 4)], pa.time32("s"))})
    a, b = rp.prints(one), rp.prints(two)
    assert a is not None and b is not None and a[0] != b[0] and a[1] == b[1]


def test_seed_and_types_are_part_of_the_print() -> None:
    t = table()
    assert (PRINT.prints(t) != RowPrint(PRINT.columns, b"other").prints(t)).all()  # type: ignore[operator]
    as_int64 = t.set_column(2, "age", t.column("age").cast(pa.int64()))
    assert (PRINT.prints(t) != PRINT.prints(as_int64)).all()  # type: ignore[operator]


def test_no_print_where_one_cannot_be_trusted() -> None:
    assert (
        RowPrint(["user_id", "gone"], b"s").prints(table()) is None
    )  # a missing column: the slow path says so
    nested = table(name=pa.array([[1], [2], [], None]))
    assert PRINT.prints(nested) is None
    times = RowPrint(["user_id", "name"], b"s", text_times=["name"])  # slash dates depend on other rows
    assert times.prints(table()) is None
    assert RowPrint(["user_id", "at"], b"s", text_times=["at"]).prints(table()) is not None  # typed: fine


def stream(**over: Any) -> Stream:
    doc: dict[str, Any] = {"name": "users", "source": {"path": "u.csv"}, "kind": "attributes", "delta": True,
                           "identifier": {"external_id": "user_id"}, "attributes": [{"column": "name"}]}  # fmt: skip
    doc.update(over)
    return Stream.model_validate(doc)


def test_streams_with_operations_or_other_kinds_get_no_fast_path() -> None:
    assert why_not(stream()) is None
    assert "op inc" in (why_not(stream(attributes=[{"column": "n", "op": "inc"}])) or "")
    assert "type object" in (why_not(stream(attributes=[{"column": "p", "type": "object"}])) or "")
    events = stream(kind="events", attributes=[], event={"name": {"value": "e"}, "time": "at"})
    assert row_print(events, ["user_id"], [], []) is None


def test_a_change_of_mapping_or_suite_changes_every_print() -> None:
    t = table()
    base = row_print(stream(), ["user_id", "name"], [], [])
    other_mapping = row_print(
        stream(attributes=[{"column": "name", "to": "first_name"}]), ["user_id", "name"], [], []
    )
    other_suite = row_print(
        stream(), ["user_id", "name"], [], [["s", 0, "expect_column_values_to_not_be_null", {}]]
    )
    assert base is not None and other_mapping is not None and other_suite is not None
    a, b, c = base.prints(t), other_mapping.prints(t), other_suite.prints(t)
    assert a is not None and b is not None and c is not None
    assert not (a == b).any() and not (a == c).any()


# ---- the state ------------------------------------------------------------------------------------------
def mapped(ids: list[int], plan: str | list[str] = "pro") -> MappedChunk:
    plans = [plan] * len(ids) if isinstance(plan, str) else plan
    objects: list[dict[str, Any]] = [
        {"external_id": f"u{i}", "plan": p} for i, p in zip(ids, plans, strict=True)
    ]
    chunk = Chunk("users", pa.table({"i": list(range(len(ids)))}), list(range(len(ids))))
    return MappedChunk(
        "attributes", chunk, objects, list(range(len(ids))), [f"external_id:u{i}" for i in ids]
    )


def prints(ids: list[int], salt: int = 0) -> np.ndarray:
    return np.array([1000 + i + salt for i in ids], np.int64)


def keys(ids: list[int]) -> list[str | None]:
    return [f"external_id:u{i}" for i in ids]


def send(state: DeltaState, ids: list[int], plan: str = "pro", salt: int = 0, ok: bool = True) -> MappedChunk:
    out, _ = state.changed("users", "attributes", mapped(ids, plan), None, prints(ids, salt))
    state.settle("users", out.delta_keys or [], ok)
    return out


def open_(path: Path, **kw: Any) -> DeltaState:
    return DeltaState(SqliteStore(path, read_only=kw.pop("read_only", False)), **kw)


def test_a_confirmed_row_is_taken_by_the_fast_path_next_run(tmp_path: Path) -> None:
    s = open_(tmp_path / "s.sqlite")
    assert not s.may_skip("users")  # the state held nothing when the run began: nothing to match
    send(s, [1, 2, 3])
    s.close()
    s = open_(tmp_path / "s.sqlite")
    got = s.unchanged_rows("users", keys([1, 2, 3, 4]), prints([1, 2, 3, 4], salt=0) + np.array([0, 0, 7, 0]))
    assert got.tolist() == [True, True, False, False]  # 3: another print; 4: never confirmed
    s.close()


def test_a_failed_or_unanswered_row_is_not_taken(tmp_path: Path) -> None:
    s = open_(tmp_path / "s.sqlite")
    send(s, [1, 2])
    s.close()
    s = open_(tmp_path / "s.sqlite")
    send(s, [2], plan="max", salt=5, ok=False)  # changed, and rejected: the user is forgotten
    out, _ = s.changed("users", "attributes", mapped([1], "max"), None, prints([1], salt=5))  # in flight
    assert s.unchanged_rows("users", keys([1, 2]), prints([1, 2])).tolist() == [False, False]
    s.settle("users", out.delta_keys or [], True)
    s.close()
    s = open_(tmp_path / "s.sqlite")
    assert s.unchanged_rows("users", keys([1, 2]), prints([1, 2], salt=5)).tolist() == [True, False]
    assert s.unchanged_rows("users", keys([1, 2]), prints([1, 2])).tolist() == [False, False]
    s.close()


def test_a_user_twice_in_a_chunk_or_without_a_key_is_not_taken(tmp_path: Path) -> None:
    s = open_(tmp_path / "s.sqlite")
    send(s, [1, 2])
    s.close()
    s = open_(tmp_path / "s.sqlite")
    ks = [*keys([1, 1, 2]), None]
    got = s.unchanged_rows("users", ks, np.array([1001, 1001, 1002, 5], np.int64))
    assert got.tolist() == [False, False, True, False]
    s.close()


def test_the_last_row_sent_for_a_user_names_its_print(tmp_path: Path) -> None:
    """Two rows of one user in a run: the record holds the second's values, so only its print may match."""
    s = open_(tmp_path / "s.sqlite")
    send(s, [1])
    s.close()
    s = open_(tmp_path / "s.sqlite")
    out, _ = s.changed("users", "attributes", mapped([1, 1], ["x", "y"]), None, np.array([7, 8], np.int64))
    s.settle("users", out.delta_keys or [], True)
    s.close()
    s = open_(tmp_path / "s.sqlite")
    assert s.unchanged_rows("users", keys([1]), np.array([8], np.int64)).tolist() == [True]
    assert s.unchanged_rows("users", keys([1]), np.array([7], np.int64)).tolist() == [False]
    again, unchanged = s.changed("users", "attributes", mapped([1], "x"), None, np.array([7], np.int64))
    assert len(again) == 1 and unchanged == 0  # the object comparison agrees: the first row is a change
    s.close()


def test_rows_found_unchanged_without_a_print_are_marked_for_the_next_run(tmp_path: Path) -> None:
    """A mapping change (or a state from before prints): every row takes the object comparison, which finds
    it unchanged and attaches its new print to the record; the next run takes it by the fast path."""
    s = open_(tmp_path / "s.sqlite")
    send(s, [1, 2])
    s.close()
    s = open_(tmp_path / "s.sqlite")
    new = prints([1, 2], salt=50)
    assert not s.unchanged_rows("users", keys([1, 2]), new).any()
    out, unchanged = s.changed("users", "attributes", mapped([1, 2]), None, new)
    assert unchanged == 2 and len(out) == 0
    s.close()
    s = open_(tmp_path / "s.sqlite")
    assert s.unchanged_rows("users", keys([1, 2]), new).tolist() == [True, True]
    s.close()


def test_a_mark_never_lands_on_a_record_that_changed_since(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", read_only=False)
    store.write("users", [("external_id:u1", b'{"a":1}')], [])
    from connector.delta.keyindex import digests

    old = int(digests([b'{"a":1}'])[0])
    store.write("users", [("external_id:u1", b'{"a":2}')], [])  # replaced after the decision
    store.mark("users", {"external_id:u1": (77, old)})
    assert store.sources("users", ["external_id:u1"]).tolist() == [0]
    store.mark("users", {"external_id:u1": (77, int(digests([b'{"a":2}'])[0]))})
    assert store.sources("users", ["external_id:u1"]).tolist() == [77]
    store.write("users", [], ["external_id:u1"])  # forgotten: the print goes with the record
    store.write("users", [("external_id:u1", b'{"a":2}')], [])
    assert store.sources("users", ["external_id:u1"]).tolist() == [0]
    store.close()


def test_prints_survive_the_end_of_run_rewrite_and_old_files_get_the_column(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path, read_only=False)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE delta_index")  # a file of the layout before prints
    db.execute("CREATE TABLE delta_index (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, hashes BLOB NOT NULL, "
               "digests BLOB NOT NULL, rids BLOB NOT NULL)")  # fmt: skip
    db.commit()
    db.close()
    store.close()
    assert SqliteStore(path, read_only=True).sources("users", ["external_id:u1"]).tolist() == [0]
    s = open_(path)
    send(s, list(range(100)))
    s.close()
    s = open_(path)
    for i in range(70):  # many index rows: the end of the run writes them again as one
        send(s, [i], plan=f"p{i}", salt=i + 1)
    s.close()
    s = open_(path)
    expect = [True] * 70 + [True] * 30
    got = s.unchanged_rows("users", keys(list(range(100))), np.array([1000 + i + (i + 1 if i < 70 else 0)
                                                                       for i in range(100)], np.int64))  # fmt: skip
    assert got.tolist() == expect
    s.close()


def test_a_store_without_prints_never_takes_the_fast_path(tmp_path: Path) -> None:
    class NoPrints(SqliteStore):
        keeps_sources = False

    s = DeltaState(NoPrints(tmp_path / "s.sqlite", read_only=False))
    send(s, [1])
    s.close()
    s = DeltaState(NoPrints(tmp_path / "s.sqlite", read_only=False))
    assert not s.may_skip("users") and not s.unchanged_rows("users", keys([1]), prints([1])).any()
    s.close()


@pytest.mark.parametrize(
    "expectation, why",
    [
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}}, None),
        ({"type": "expect_column_values_to_be_between", "kwargs": {"column": "a", "min_value": 1}}, None),
        ({"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}, "table-level"),
        ({"type": "expect_column_values_to_be_unique", "kwargs": {"column": "a"}}, "table-level"),
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a", "mostly": 0.9}}, "table-level"),
        ({"type": "expect_column_values_to_be_between", "kwargs": {"column": "t", "min_value": "now-24h"}}, "time"),
        pytest.param({"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["a", "t"]}},
                     "Great Exp", marks=pytest.mark.xdist_group("gx")),  # imports GX: the gx worker (conftest.py)
    ],
)
def test_only_suites_judging_each_row_alone_allow_the_fast_path(
    expectation: dict[str, Any], why: str | None, tmp_path: Path
) -> None:
    from connector.validation import SuiteRunner

    (tmp_path / "s.json").write_text(json.dumps({"name": "s", "expectations": [expectation]}), encoding="utf-8")
    got = SuiteRunner(["s"], tmp_path).row_alone()
    assert got is None if why is None else why in (got or "")
