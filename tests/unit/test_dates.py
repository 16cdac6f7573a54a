"""Format lists (`format: [...]`, tried in order) and slash dates read day/month or month/day (mapping/dates.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connector.config import Stream, load_pipeline
from connector.errors import ConfigError
from connector.mapping import DateReadings, map_chunk
from connector.mapping.casts import cast_array
from connector.records import Chunk

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def mapped(cells: list[Any], *, dates: DateReadings | None = None, first_row: int = 2, **value: Any) -> Any:
    spec = {
        "name": "s",
        "source": {"path": "in.csv"},
        "kind": "attributes",
        "identifier": {"external_id": "id"},
        "attributes": [{"column": "d", "to": "v", **value}],
    }
    table = pa.table({"id": [f"u{i}" for i in range(len(cells))], "d": cells})
    chunk = Chunk("in.csv", table, list(range(first_row, first_row + len(cells))))
    return map_chunk(Stream.model_validate(spec), chunk, NOW, dates=dates)


def values(m: Any) -> dict[int, Any]:
    return {m.ref(j).row: o.get("v") for j, o in enumerate(m.objects)}


# --------------------------------------------------------------------------- format lists


def test_a_format_list_reads_each_cell_with_the_first_format_that_fits() -> None:
    m = mapped(["10.03.2022", "Jun 16, 2022", "16.06.2022 "], type="time", format=["%d.%m.%Y", "%b %d, %Y"])
    assert values(m) == {
        2: "2022-03-10T00:00:00.000Z",
        3: "2022-06-16T00:00:00.000Z",
        4: "2022-06-16T00:00:00.000Z",
    }
    assert m.rejects == []


def test_a_cell_matching_no_format_is_rejected_with_the_formats_tried() -> None:
    m = mapped(["10.03.2022", "2022/03/10"], type="time", format=["%d.%m.%Y", "%b %d, %Y"])
    (rej,) = m.rejects
    assert rej.rule == "cast.time" and rej.column == "d" and rej.ref.row == 3
    assert rej.message() == (
        "in.csv, row 3, column 'd': [cast.time] '2022/03/10' matches none of the formats '%d.%m.%Y', "
        "'%b %d, %Y' (tried in order)"
    )


def test_date_columns_take_format_lists_too_and_one_format_names_itself() -> None:
    m = mapped(["10.03.2022", "Jun 16, 2022", "x"], type="date", format=["%d.%m.%Y", "%b %d, %Y"])
    assert values(m) == {2: "2022-03-10", 3: "2022-06-16"}
    assert [r.rule for r in m.rejects] == ["cast.date"]
    one = mapped(["10.03.2022", "2022-03-10"], type="date", format="%d.%m.%Y")
    assert one.rejects[0].reason == "'2022-03-10' does not match the format '%d.%m.%Y'"


def test_pipeline_files_accept_a_format_list_and_check_each_format(tmp_path: Path) -> None:
    def write(fmt: str) -> Path:
        p = tmp_path / "p.yaml"
        p.write_text(
            "name: p\nstreams:\n  - name: s\n    source: {path: in.csv}\n    kind: attributes\n"
            f"    identifier: {{external_id: id}}\n    attributes: [{{column: d, type: time, format: {fmt}}}]\n",
            encoding="utf-8",
        )
        return p

    p = load_pipeline(write('["%d.%m.%Y", "%b %d, %Y"]'))
    assert p.streams[0].attributes[0].format == ["%d.%m.%Y", "%b %d, %Y"]
    with pytest.raises(ConfigError, match=r"attributes\.0\.format\.1: .*bad directive"):
        load_pipeline(write('["%d.%m.%Y", "%Q"]'))
    with pytest.raises(ConfigError, match=r"format"):
        load_pipeline(write("[]"))


def test_each_format_parses_only_the_cells_still_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vectorised: each format is one pandas call over the cells the formats before it left, never a loop."""
    from connector.mapping import timeparse

    calls: list[tuple[str, int]] = []
    real = timeparse.parse

    def spy(ser: Any, fmt: str, tz: str) -> Any:
        calls.append((fmt, len(ser)))
        return real(ser, fmt, tz)

    monkeypatch.setattr(timeparse, "parse", spy)
    cells = ["10.03.2022", "Jun 16, 2022", "2022/06/16"] * 10_000
    res = cast_array(pa.array(cells), "time", fmt=["%d.%m.%Y", "%b %d, %Y", "%Y/%m/%d", "%Y"])
    assert not res.errors
    assert res.values[:3] == [
        "2022-03-10T00:00:00.000Z",
        "2022-06-16T00:00:00.000Z",
        "2022-06-16T00:00:00.000Z",
    ]
    assert calls == [("%d.%m.%Y", 30_000), ("%b %d, %Y", 20_000), ("%Y/%m/%d", 10_000)]  # "%Y": nothing left


# --------------------------------------------------------------------------- day/month or month/day


def test_ambiguous_slash_dates_are_read_month_first_and_flagged() -> None:
    """Today's reading of 07/09/2023 (Braze's MM/DD/YYYY: 9 July) is kept, but not silently."""
    dates = DateReadings("users")
    m = mapped(["07/09/2023", "01/02/2023", "05/05/2023"], type="time", dates=dates)
    assert values(m)[2] == "2023-07-09T00:00:00.000Z"
    (w,) = dates.warnings()
    assert w.startswith("ambiguous dates: stream users, column 'd': 2 value(s) such as '07/09/2023'")
    assert "read as month/day (07/09/2023 = 2023-07-09)" in w
    assert 'format: "%m/%d/%Y"' in w and 'format: "%d/%m/%Y" for day/month' in w


def test_a_value_over_12_in_the_first_part_reads_the_column_day_first_without_a_warning() -> None:
    dates = DateReadings("users")
    m = mapped(["07/09/2023", "13/09/2023"], type="time", dates=dates)
    assert values(m) == {2: "2023-09-07T00:00:00.000Z", 3: "2023-09-13T00:00:00.000Z"}
    assert m.rejects == [] and dates.warnings() == []


def test_a_value_over_12_in_the_second_part_reads_the_column_month_first_without_a_warning() -> None:
    dates = DateReadings("users")
    m = mapped(["07/09/2023", "09/13/2023"], type="time", dates=dates)
    assert values(m) == {2: "2023-07-09T00:00:00.000Z", 3: "2023-09-13T00:00:00.000Z"}
    assert dates.warnings() == []


def test_the_reading_holds_across_chunks_and_a_late_contradiction_is_rejected_and_warned() -> None:
    dates = DateReadings("users")
    first = mapped(["13/09/2023"], type="time", dates=dates)
    later = mapped(["07/09/2023"], type="time", dates=dates, first_row=3)
    assert values(first) == {2: "2023-09-13T00:00:00.000Z"}
    assert values(later) == {3: "2023-09-07T00:00:00.000Z"}  # day/month, as the column's first chunk showed
    assert dates.warnings() == []

    dates = DateReadings("users")
    mapped(["07/09/2023"], type="time", dates=dates)  # nothing tells: month/day
    late = mapped(["13/09/2023", "08/09/2023"], type="time", dates=dates, first_row=3)
    assert values(late) == {4: "2023-08-09T00:00:00.000Z"}  # still month/day: rows already sent were
    assert [(r.rule, r.ref.row) for r in late.rejects] == [("cast.time", 3)]
    warned = dates.warnings()
    assert len(warned) == 2
    assert "read as month/day" in warned[0] and "'07/09/2023'" in warned[0]
    assert "1 value(s) such as '13/09/2023' are day/month; they were rejected" in warned[1]


def test_an_explicit_format_or_unambiguous_values_are_never_flagged() -> None:
    dates = DateReadings("s")
    m = mapped(["07/09/2023"], type="time", format="%d/%m/%Y", dates=dates)
    assert values(m) == {2: "2023-09-07T00:00:00.000Z"}
    mapped(["2023-07-09", "03/03/2023", "12/12/2023"], type="time", dates=dates)
    assert dates.warnings() == []


def test_a_column_holding_both_orders_reads_month_first_and_rejects_the_others() -> None:
    dates = DateReadings("s")
    m = mapped(["13/01/2023", "01/13/2023"], type="time", dates=dates)
    assert values(m) == {3: "2023-01-13T00:00:00.000Z"}
    assert [r.rule for r in m.rejects] == ["cast.time"]
    assert any("are day/month; they were rejected" in w for w in dates.warnings())


def test_a_column_read_by_two_values_is_counted_once() -> None:
    spec = {
        "name": "ev",
        "source": {"path": "in.csv"},
        "kind": "events",
        "identifier": {"external_id": "id"},
        "event": {
            "name": {"value": "e"},
            "time": "d",
            "properties": {"columns": {"day": {"column": "d", "type": "time"}}},
        },
    }
    table = pa.table({"id": ["u1", "u2"], "d": ["07/09/2023", "01/02/2023"]})
    dates = DateReadings("ev")
    m = map_chunk(Stream.model_validate(spec), Chunk("in.csv", table, [2, 3]), NOW, dates=dates)
    assert m.objects[0]["time"] == m.objects[0]["properties"]["day"] == "2023-07-09T00:00:00.000Z"
    (w,) = dates.warnings()
    assert "column 'd': 2 value(s) such as '07/09/2023'" in w
