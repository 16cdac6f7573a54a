"""The contract's column pre-checks on Arrow arrays (contract/arrays.py) against the same checks on Python
lists (contract/columns.py): never fewer suspect rows, and the same ones on ordinary data."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from connector.contract import arrays
from connector.contract import columns as precheck

TEXTS = ["ok", "é" * 255, "é" * 256, "x" * 256, "", "a\x00b", "del\x7f", "c1\x85", "nbsp\xa0", "\u2028", None]


@pytest.mark.parametrize("seed", range(6))
def test_arrow_prechecks_cover_the_list_prechecks(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.choice(TEXTS) for _ in range(300)]
    arr = pa.array(values, type=rng.choice([pa.string(), pa.large_string()])).slice(rng.randrange(5))
    values = arr.to_pylist()
    for key in ("first_name", "gender", "$bad", "email_subscribe"):
        assert precheck.attribute_rows(key, arr, False) >= precheck.attribute_rows(key, values, False)
    assert precheck.identifier_rows({"external_id": [arr]}, len(values)) == precheck.identifier_rows(
        {"external_id": [values]}, len(values)
    )
    for name in ("name", "time", "currency", "price", "app_id"):
        assert precheck.event_field_rows(name, arr, False) >= precheck.event_field_rows(name, values, False)
    for key in ("country", "dob"):  # checked per distinct value: exactly the list check's rows
        assert precheck.attribute_rows(key, arr, False) == precheck.attribute_rows(key, values, False)


EMAILS = ["a@b.co", "a@b", "a b@c.d", "é@x.io", "x" * 250 + "@b.co", "@b.co", "a@b.c.", "", None]


@pytest.mark.parametrize("seed", range(6))
def test_arrow_identifier_checks_with_an_email_attribute_cover_the_lists(seed: int) -> None:
    rng = random.Random(seed)
    ids = [rng.choice(TEXTS + ["u1", "x" * 246, "x" * 247]) for _ in range(200)]
    emails = [rng.choice(EMAILS) for _ in range(200)]
    if seed % 2:  # the common column: every cell plain and short, no null
        ids, emails = [f"u{i}" for i in range(200)], [f"u{i}@example.com" for i in range(200)]
    t = rng.choice([pa.string(), pa.large_string()])
    a_ids, a_emails = pa.array(ids, t).slice(1), pa.array(emails, t).slice(1)
    lists = {"external_id": [a_ids.to_pylist()], "email": [a_emails.to_pylist()]}
    got = precheck.identifier_rows({"external_id": [a_ids], "email": [a_emails]}, len(a_ids))
    expected = precheck.identifier_rows(lists, len(a_ids))
    assert got >= expected  # never fewer suspect rows ("é@x.io" is left to the Python check)
    if seed % 2:
        assert got == expected == set()


def test_control_characters_are_found_in_arrow_buffers() -> None:
    arr = pa.array(["fine", "nul\x00", "del\x7f", "c1\x85", "latin \xa0 é", None, "ok"])
    assert arrays.control_rows(arr) == {1, 2, 3}
    assert arrays.control_rows(pa.array(["é", "\xa0", "°"])) == set()  # C2 A0, C2 B0: not C1 controls


def test_iso_times_are_checked_by_position() -> None:
    good = pa.array(["2024-01-02T03:04:05.006Z", "1999-12-31T23:59:59.999Z"])
    assert arrays.iso_ms(good) and arrays.iso_ms(good.slice(1))
    assert not arrays.iso_ms(pa.array(["2024-01-02T03:04:05.006Z", "2024-01-02 03:04:05.006Z"]))
    assert not arrays.iso_ms(pa.array(["2024-01-02T03:04:05.006Z", None]))
    assert not arrays.iso_ms(pa.array(["2024-01-02T03:04:05.0067"]))
    assert not arrays.iso_ms(pa.array(["２024-01-02T03:04:05.006Z"]))  # a non-ASCII digit: more bytes


def test_strings_are_measured_in_characters() -> None:
    arr = pa.array(["é" * 255, "é" * 256, "x" * 255, None])
    assert arrays.long_strings(arr, 255) == {1}
    assert arrays.not_scalar(arr) == {1}
    assert arrays.not_scalar(pa.array([1.5, float("inf"), None, float("nan")])) == {1, 3}
    assert arrays.names(pa.array(["viewed", " x", "\x1f", None, "é"])) == {1, 2, 3, 4}
