"""Write the sample tables, with their deliberately bad rows, and the rejects and counts they must produce.

Deterministic (fixed seed, stdlib + pyarrow only): running it twice gives identical bytes.

    python sample_data/generate.py [--out DIR]

Every bad row has exactly ONE defect that exactly one rule catches (rule ids from docs/ARCHITECTURE.md).
Expectation suites run before mapping and contract checks, so a defect a suite covers is caught at stage
"expectation". The files written beside the tables:

- expected_rejects.csv: file,row,stage,rule for every bad row (CSV: physical line, header = line 1;
  Parquet: 1-based row index). `file` is relative to the project root.
- expected_counts.json: per pipeline, rows read (parse rejects included), rejected by stage and by rule, valid.

`warehouse.duckdb` (a small DuckDB database: table `users` with typed columns and an `updated_at` cursor, for
pipelines/warehouse_users.yaml) is written by `main()` too; a database file is not byte-for-byte repeatable,
so its *rows* are what stays fixed (`warehouse_rows()`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20260101
TODAY = date(2026, 1, 1)
HERE = Path(__file__).resolve().parent

FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "Diego",
    "Emma",
    "Farah",
    "Gabriel",
    "Hana",
    "Ivan",
    "Julia",
    "Kenji",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wei",
    "Yara",
    "Zoe",
]
LAST = [
    "Garcia",
    "Smith",
    "Müller",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Nakamura",
    "Okafor",
    "Silva",
    "Jensen",
    "O'Brien",
    "Novak",
    "Haddad",
    "Larsen",
    "Moreau",
    "Tanaka",
    "Kim",
    "Patel",
    "Costa",
    "Fischer",
]
# No "NA" (Namibia): it is a CSV null marker.
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "BR", "JP", "IN", "CA", "AU", "NL", "SE", "MX", "PL"]
PLANS = ["free", "basic", "pro", "enterprise"]
GENDERS = ["M", "F", "O", "N", "P"]
TAGS = ["sports", "music", "travel", "food", "tech", "fashion", "gaming", "books", "film", "outdoors"]
BIO_BITS = [
    "Coffee lover",
    "runs on weekends",
    "reads sci-fi",
    'plays "jazz" guitar',
    "dog person",
    "amateur baker",
    "learning Japanese",
    "board games, always",
    "cyclist",
    "night owl",
]
EVENTS = ["app_open", "search", "viewed_product", "added_to_cart", "checkout_started", "shared_item"]
APPS = ["3f1c2a9e-4b6d-4e8a-9c1f-0a2b3c4d5e6f", "7d9e8f0a-1b2c-4d3e-8f4a-5b6c7d8e9f00"]
PRODUCTS = [
    "backpack",
    "water_bottle",
    "running_shoes",
    "yoga_mat",
    "headphones",
    "sunglasses",
    "rain_jacket",
]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CAD", "AUD"]

USERS_COLS = [
    "user_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "country",
    "dob",
    "gender",
    "plan",
    "age",
    "lifetime_value",
    "signup_at",
    "tags",
    "marketing_opt_in",
    "bio",
    "preferences",
]


@dataclass
class Bad:
    """One deliberately bad row: where it is and what must catch it."""

    file: str
    row: int
    stage: str
    rule: str


@dataclass
class Table:
    """A table's bytes, its data-row count and its bad rows."""

    name: str
    data: bytes
    rows: int
    bad: list[Bad] = field(default_factory=list)


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _user_id(i: int) -> str:
    return f"u{i:05d}"


class _CsvBuilder:
    """Accumulates CSV lines and knows the physical line number of each record."""

    def __init__(self, name: str, header: list[str]) -> None:
        self.name = name
        self.parts: list[bytes] = [_csv_line(header).encode()]
        self.line = 2
        self.rows = 0
        self.bad: list[Bad] = []

    def add(self, line: str | bytes, bad: tuple[str, str] | None = None) -> None:
        raw = line.encode() if isinstance(line, str) else line
        if bad:
            self.bad.append(Bad(f"sample_data/{self.name}", self.line, *bad))
        self.parts.append(raw)
        self.line += raw.count(b"\n")
        self.rows += 1

    def table(self) -> Table:
        return Table(self.name, b"".join(self.parts), self.rows, self.bad)


# --------------------------------------------------------------------------- users


def _user(rng: random.Random, i: int) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    dob = TODAY - timedelta(days=rng.randint(16 * 365, 80 * 365))
    age = TODAY.year - dob.year - ((TODAY.month, TODAY.day) < (dob.month, dob.day))
    signup = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 4 * 365 * 86400))
    handle = f"{first}.{last}".lower().replace("'", "").replace("ü", "u")
    prefs = {
        "newsletter": rng.random() < 0.5,
        "theme": rng.choice(["light", "dark"]),
        "notifications": {"email": rng.random() < 0.7, "push": rng.random() < 0.4},
    }
    return {
        "user_id": _user_id(i),
        "first_name": first,
        "last_name": last,
        "email": f"{handle}{i}@example.com",
        "phone": f"+1{rng.randint(2000000000, 9899999999)}" if rng.random() < 0.85 else "",
        "country": rng.choice(COUNTRIES),
        "dob": dob.isoformat(),
        "gender": rng.choice(GENDERS) if rng.random() < 0.9 else "",
        "plan": rng.choice(PLANS),
        "age": str(age),
        "lifetime_value": f"{rng.uniform(0, 2500):.2f}",
        "signup_at": _iso(signup),
        "tags": "|".join(rng.sample(TAGS, rng.randint(1, 4))),
        "marketing_opt_in": rng.choice(["true", "false"]),
        "bio": ", ".join(rng.sample(BIO_BITS, rng.randint(1, 3))) if rng.random() < 0.8 else "",
        "preferences": json.dumps(prefs, separators=(",", ":")),
    }


def build_users(rng: random.Random, n: int = 1000) -> Table:
    """users.csv: ~1,000 profiles; 11 bad rows."""
    out = _CsvBuilder("users.csv", USERS_COLS)
    defects: dict[int, tuple[str, str, str]] = {  # row index -> (kind, stage, rule)
        40: ("extra_field", "parse", "csv.column_count"),
        95: ("latin1", "parse", "csv.encoding"),
        150: ("no_user_id", "expectation", "expect_column_values_to_not_be_null"),
        230: ("bad_email", "contract", "email.invalid"),
        310: ("long_id", "contract", "external_id.too_long"),
        390: ("ltv", "mapping", "cast.float"),
        470: ("signup", "mapping", "cast.time"),
        555: ("plan", "expectation", "expect_column_values_to_be_in_set"),
        640: ("age", "expectation", "expect_column_values_to_be_between"),
        720: ("gender", "contract", "standard_field.gender"),
        810: ("bio", "contract", "string.too_long"),
    }
    for i in range(n):
        u = _user(rng, i + 1)
        kind, stage, rule = defects.get(i, ("", "", ""))
        if i == 500:
            u["bio"] = "Two lines of bio:\nthis quoted field spans a line break"
        if kind == "extra_field":
            out.add(_csv_line([*u.values(), "EXTRA"]), (stage, rule))
        elif kind == "latin1":
            u["first_name"] = "José"
            out.add(_csv_line(list(u.values())).encode("latin-1"), (stage, rule))
        else:
            if kind == "no_user_id":
                u["user_id"] = ""
            elif kind == "bad_email":
                u["email"] = "not-an-email"
            elif kind == "long_id":
                u["user_id"] = "u" + "x" * 999
            elif kind == "ltv":
                u["lifetime_value"] = "12abc"
            elif kind == "signup":
                u["signup_at"] = "2023-02-30"
            elif kind == "plan":
                u["plan"] = "platinum"
            elif kind == "age":
                u["age"] = "-5"
            elif kind == "gender":
                u["gender"] = "X"
            elif kind == "bio":
                u["bio"] = ("Long bio. " * 30)[:300]
            out.add(_csv_line(list(u.values())), (stage, rule) if kind else None)
    return out.table()


# --------------------------------------------------------------------------- events


def build_events(rng: random.Random, n: int = 3000, users: int = 1000) -> Table:
    """events.parquet: ~3,000 events with native types; 8 bad rows."""
    start = datetime(2025, 6, 1, tzinfo=UTC)
    cols: dict[str, list[object]] = {
        k: [] for k in ("user_id", "event_name", "event_time", "amount", "properties", "app_id")
    }
    defects = {
        120: ("null_user", "expectation", "expect_column_values_to_not_be_null"),
        480: ("null_name", "contract", "event.name_missing"),
        900: ("null_time", "contract", "time.missing"),
        1300: ("bad_json", "mapping", "cast.json"),
        1700: ("dollar_key", "contract", "key.invalid"),
        2100: ("time_key", "contract", "key.reserved"),
        2500: ("neg_amount", "expectation", "expect_column_values_to_be_between"),
        2900: ("many_keys", "contract", "properties.too_many"),
    }
    bad: list[Bad] = []
    for i in range(n):
        name = rng.choice(EVENTS)
        props: dict[str, object] = {"platform": rng.choice(["ios", "android", "web"])}
        if name == "search":
            props["query"] = rng.choice(["shoes", "rain jacket", "yoga", "headphones"])
        elif name in ("viewed_product", "added_to_cart"):
            props["product_id"] = rng.choice(PRODUCTS)
            props["in_stock"] = rng.random() < 0.9
        row: dict[str, object] = {
            "user_id": _user_id(rng.randint(1, users)),
            "event_name": name,
            "event_time": start
            + timedelta(seconds=rng.randint(0, 180 * 86400), milliseconds=rng.randint(0, 999)),
            "amount": round(rng.uniform(0, 300), 2) if name == "checkout_started" else 0.0,
            "properties": "",
            "app_id": rng.choice(APPS),
        }
        kind, stage, rule = defects.get(i, ("", "", ""))
        if kind == "null_user":
            row["user_id"] = None
        elif kind == "null_name":
            row["event_name"] = None
        elif kind == "null_time":
            row["event_time"] = None
        elif kind == "dollar_key":
            props["$bad"] = 1
        elif kind == "time_key":
            props["time"] = "2025-06-02T00:00:00Z"
        elif kind == "neg_amount":
            row["amount"] = -5.0
        elif kind == "many_keys":
            props = {f"p{k:03d}": k for k in range(300)}
        row["properties"] = '{"a":' if kind == "bad_json" else json.dumps(props, separators=(",", ":"))
        if kind:
            bad.append(Bad("sample_data/events.parquet", i + 1, stage, rule))
        for k, v in row.items():
            cols[k].append(v)
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("event_name", pa.string()),
            ("event_time", pa.timestamp("ms", tz="UTC")),
            ("amount", pa.float64()),
            ("properties", pa.string()),
            ("app_id", pa.string()),
        ]
    )
    table = pa.table(cols, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=1000, compression="zstd")
    return Table("events.parquet", sink.getvalue().to_pybytes(), n, bad)


# --------------------------------------------------------------------------- purchases, canvas, live activities


def build_purchases(rng: random.Random, n: int = 500, users: int = 1000) -> Table:
    """purchases.csv: ~500 purchases; 7 bad rows."""
    out = _CsvBuilder(
        "purchases.csv", ["user_id", "product_id", "currency", "price", "quantity", "purchased_at"]
    )
    start = datetime(2025, 6, 1, tzinfo=UTC)
    defects = {
        30: ("currency", "contract", "purchase.currency"),
        90: ("price", "mapping", "cast.float"),
        150: ("qty0", "contract", "purchase.quantity"),
        210: ("qty101", "contract", "purchase.quantity"),
        280: ("no_product", "contract", "purchase.product_id_missing"),
        350: ("when", "mapping", "cast.time"),
        420: ("short_line", "parse", "csv.column_count"),
    }
    for i in range(n):
        row = [
            _user_id(rng.randint(1, users)),
            rng.choice(PRODUCTS),
            rng.choice(CURRENCIES),
            f"{rng.uniform(5, 250):.2f}",
            str(rng.randint(1, 5)),
            _iso(start + timedelta(seconds=rng.randint(0, 180 * 86400))),
        ]
        kind, stage, rule = defects.get(i, ("", "", ""))
        edits = {
            "currency": (2, "US"),
            "price": (3, "abc"),
            "qty0": (4, "0"),
            "qty101": (4, "101"),
            "no_product": (1, ""),
            "when": (5, "yesterday"),
        }
        if kind in edits:
            col, val = edits[kind]
            row[col] = val
        if kind == "short_line":
            row = row[:5]
        out.add(_csv_line(row), (stage, rule) if kind else None)
    return out.table()


def build_canvas(rng: random.Random, n: int = 120, users: int = 1000) -> Table:
    """canvas_recipients.csv: ~120 recipients with Canvas context; no bad rows."""
    out = _CsvBuilder("canvas_recipients.csv", ["user_id", "first_name", "coupon_code", "cart_value"])
    for i in rng.sample(range(1, users + 1), n):
        code = "SAVE-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))
        out.add(_csv_line([_user_id(i), rng.choice(FIRST), code, f"{rng.uniform(10, 400):.2f}"]))
    return out.table()


def build_live_activities(rng: random.Random, n: int = 20) -> Table:
    """live_activities.csv: ~20 score updates; 1 bad row."""
    out = _CsvBuilder(
        "live_activities.csv",
        ["activity_id", "score_home", "score_away", "status", "end_activity", "dismissal_date"],
    )
    for i in range(n):
        final = i % 5 == 4
        row = [
            f"match-{i // 5 + 1:03d}",
            str(rng.randint(0, 4)),
            str(rng.randint(0, 4)),
            "final" if final else "in_progress",
            "true" if final else "false",
            _iso(datetime(2026, 1, 10, 18, tzinfo=UTC) + timedelta(hours=i)) if final else "",
        ]
        bad = None
        if i == 12:
            row[5] = "soon"
            bad = ("mapping", "cast.time")
        out.add(_csv_line(row), bad)
    return out.table()


# --------------------------------------------------------------------------- warehouse (DuckDB)

WAREHOUSE = "warehouse.duckdb"
WAREHOUSE_COLUMNS = (
    "user_id VARCHAR, email VARCHAR, first_name VARCHAR, country VARCHAR, plan VARCHAR, "
    "lifetime_value DECIMAL(10, 2), marketing_opt_in BOOLEAN, signup_at TIMESTAMPTZ, "
    "last_login TIMESTAMP, preferences JSON, updated_at TIMESTAMPTZ"
)
# The warehouse's deliberately bad rows: user number -> (stage, rule).
WAREHOUSE_BAD = {17: ("contract", "email.invalid"), 101: ("contract", "identifier.missing")}


def warehouse_rows(n: int = 200) -> list[tuple[object, ...]]:
    """The rows of warehouse.duckdb's `users` table (deterministic); 2 bad ones (WAREHOUSE_BAD)."""
    rng = random.Random(SEED + 13)
    out: list[tuple[object, ...]] = []
    for i in range(1, n + 1):
        first = rng.choice(FIRST)
        updated = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 3 * 24 * 60))
        prefs = {"newsletter": rng.random() < 0.5, "theme": rng.choice(["light", "dark"])}
        row = (
            f"w{i:04d}",
            f"{first.lower()}{i}@example.com",
            first,
            rng.choice(COUNTRIES),
            rng.choice(PLANS),
            f"{rng.uniform(0, 2500):.2f}",
            rng.random() < 0.6,
            (datetime(2022, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 3 * 365 * 86400))).isoformat(),
            None if rng.random() < 0.2 else (updated - timedelta(hours=rng.randint(1, 48))).replace(tzinfo=None).isoformat(),
            json.dumps(prefs),
            updated.isoformat(),
        )
        if WAREHOUSE_BAD.get(i, ("", ""))[1] == "email.invalid":
            row = (row[0], "not-an-email", *row[2:])
        elif WAREHOUSE_BAD.get(i, ("", ""))[1] == "identifier.missing":
            row = (None, None, *row[2:])  # with an email, Braze would take the email as the identifier
        out.append(row)
    return out


def write_warehouse(path: Path) -> None:
    """Write warehouse.duckdb (replacing it) from warehouse_rows()."""
    import duckdb

    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE TABLE users ({WAREHOUSE_COLUMNS})")
        con.executemany(f"INSERT INTO users VALUES ({', '.join('?' * 11)})", warehouse_rows())
        con.execute("CHECKPOINT")
    finally:
        con.close()


# --------------------------------------------------------------------------- expected results


def _counts(tables: list[Table]) -> dict[str, object]:
    bad = [b for t in tables for b in t.bad]
    read = sum(t.rows for t in tables)
    return {
        "read": read,
        "rejected": len(bad),
        "rejected_by_stage": dict(sorted(Counter(b.stage for b in bad).items())),
        "rejected_by_rule": dict(sorted(Counter(b.rule for b in bad).items())),
        "valid": read - len(bad),
    }


def _warehouse_counts() -> dict[str, object]:
    read, bad = len(warehouse_rows()), list(WAREHOUSE_BAD.values())
    return {
        "read": read,
        "rejected": len(bad),
        "rejected_by_stage": dict(sorted(Counter(b[0] for b in bad).items())),
        "rejected_by_rule": dict(sorted(Counter(b[1] for b in bad).items())),
        "valid": read - len(bad),
    }


def build_all() -> dict[str, bytes]:
    """Every output file name -> its bytes."""
    rng = random.Random(SEED)
    users = build_users(rng)
    events = build_events(rng)
    purchases = build_purchases(rng)
    canvas = build_canvas(rng)
    live = build_live_activities(rng)
    tables = [users, events, purchases, canvas, live]
    files = {t.name: t.data for t in tables}
    rejects = io.StringIO()
    w = csv.writer(rejects, lineterminator="\n")
    w.writerow(["file", "row", "stage", "rule"])
    for t in tables:
        for b in t.bad:
            w.writerow([b.file, b.row, b.stage, b.rule])
    files["expected_rejects.csv"] = rejects.getvalue().encode()
    per_pipeline = {
        "users": _counts([users]),
        "events": _counts([events]),
        "purchases": _counts([purchases]),
        "canvas_trigger": _counts([canvas]),
        "live_activity": _counts([live]),
        "quickstart": _counts([users, events, purchases]),
        "warehouse_users": _warehouse_counts(),
    }
    files["expected_counts.json"] = (json.dumps(per_pipeline, indent=2) + "\n").encode()
    return files


def main(argv: list[str] | None = None) -> None:
    """Write the sample files into --out (default: this folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in build_all().items():
        (args.out / name).write_bytes(data)
    write_warehouse(args.out / WAREHOUSE)


if __name__ == "__main__":
    main()
