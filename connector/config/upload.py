"""A one-stream pipeline built from `braze-connector upload` flags and the file's inferred column types.

`build_upload(spec, types)` returns the Pipeline a hand-written file would hold: the file as its source
(an absolute path), one stream of `spec.kind`, every column mapped (minus the ones the identifier, event or
purchase fields use) unless `--map` lists them, and absolute report, history and state paths so the
pipeline file written beside the report (`loading.dump_pipeline`) runs the same from anywhere. Every bad
flag is a ConfigError (exit 2) of one line naming the flag and its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import ValidationError

from connector.config.loading import problems
from connector.config.mappings import ValueType
from connector.config.models import Pipeline
from connector.config.paths import NAME_PATTERN
from connector.errors import ConfigError

UploadKind = Literal["attributes", "events", "purchases"]
IdType = Literal["external_id", "email", "phone", "braze_id", "user_alias"]
MAP_SYNTAX = "COL[:TYPE][=ATTR]"
_TYPES = [t for t in get_args(ValueType) if t != "auto"]
# Braze field -> the flag naming its column; a column named like the field is taken when the flag is not given.
_FIELD_FLAGS = {
    "events": {"time": "--time-column"},
    "purchases": {
        "product_id": "--product-column",
        "price": "--price-column",
        "currency": "--currency-column",
        "time": "--time-column",
    },
}


@dataclass(frozen=True)
class UploadSpec:
    """The flags of one `upload` (column flags are None when not given)."""

    file: Path
    kind: UploadKind
    id_column: str
    id_type: IdType = "external_id"
    alias_label_column: str | None = None
    maps: tuple[str, ...] = ()
    name_column: str | None = None
    event_name: str | None = None
    time_column: str | None = None
    product_column: str | None = None
    price_column: str | None = None
    currency_column: str | None = None
    quantity_column: str | None = None
    date_formats: tuple[str, ...] = ()
    endpoint: str = "local"
    api_key_env: str = "BRAZE_API_KEY"
    name: str | None = None
    workdir: Path = Path(".")  # reports/ and state/ go under it
    report_dir: Path | None = None  # --report-dir (relative to workdir)


@dataclass(frozen=True)
class MapSpec:
    column: str
    type: str | None
    to: str | None


def parse_map(text: str, columns: dict[str, str]) -> MapSpec:
    """`COL[:TYPE][=ATTR]` -> MapSpec; a ConfigError naming the value for a bad spec, column or type."""
    left, eq, to = text.partition("=")
    if not left or (eq and not to.strip()):
        raise ConfigError(f"--map {text!r}: expected {MAP_SYNTAX}, e.g. --map signup:time=signed_up_at")
    column, kind = left, None
    if left not in columns and ":" in left:
        column, _, kind = left.rpartition(":")
        if kind not in _TYPES:
            raise ConfigError(f"--map {text!r}: unknown type {kind!r}; use one of {', '.join(_TYPES)}")
    if column not in columns:
        raise ConfigError(f"--map {text!r}: no column {column!r} in the file; columns: {', '.join(columns)}")
    return MapSpec(column, kind, to.strip() or None)


def _column(flag: str, value: str, columns: dict[str, str]) -> str:
    if value not in columns:
        raise ConfigError(f"{flag} {value!r}: no such column in the file; columns: {', '.join(columns)}")
    return value


def _field_column(spec: UploadSpec, field: str, columns: dict[str, str]) -> str:
    """The column of a Braze field: its flag, else a column of the field's own name, else an error naming the flag."""
    flag = _FIELD_FLAGS[spec.kind][field]
    given = getattr(spec, flag.removeprefix("--").replace("-", "_"))
    if given is not None:
        return _column(flag, given, columns)
    if field in columns:
        return field
    raise ConfigError(
        f"--kind {spec.kind} needs {flag} COLUMN (the {field} of each row; no column is named {field!r}); "
        f"columns: {', '.join(columns)}"
    )


def _value(column: str, kind: str, formats: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"column": column}
    if kind != "auto":
        out["type"] = kind
    if formats and kind in ("time", "date"):
        out["format"] = list(formats) if len(formats) > 1 else formats[0]
    return out


def _refuse_flags(spec: UploadSpec, flags: dict[str, str | None]) -> None:
    for flag, value in flags.items():
        if value is not None:
            raise ConfigError(f"{flag} does not apply to --kind {spec.kind}")


def _identifier(spec: UploadSpec, columns: dict[str, str]) -> tuple[dict[str, Any], set[str]]:
    ident = _column("--id", spec.id_column, columns)
    if spec.id_type == "user_alias":
        if spec.alias_label_column is None:
            raise ConfigError(
                "--id-type user_alias needs --alias-label COLUMN (the alias label; --id is the name)"
            )
        label = _column("--alias-label", spec.alias_label_column, columns)
        return {"user_alias": {"name": ident, "label": label}}, {ident, label}
    if spec.alias_label_column is not None:
        raise ConfigError("--alias-label goes with --id-type user_alias")
    return {spec.id_type: ident}, {ident}


def _mapped(spec: UploadSpec, columns: dict[str, str], used: set[str]) -> list[tuple[str, str, str | None, bool]]:
    """(column, type, target, type given with --map) of every mapped column: --map's, else every column not
    used elsewhere."""
    if spec.maps:
        out = []
        for text in spec.maps:
            m = parse_map(text, columns)
            out.append((m.column, m.type or columns[m.column], m.to, m.type is not None))
        return out
    return [(c, t, None, False) for c, t in columns.items() if c not in used]


def build_upload(spec: UploadSpec, columns: dict[str, str]) -> Pipeline:
    """The pipeline an upload runs (see the module docstring).

    Raises:
        ConfigError: a flag names no column, a missing flag, a bad --map, or a pipeline that does not validate.
    """
    if not columns:
        raise ConfigError(f"{spec.file}: the file has no columns to upload")
    workdir = spec.workdir.resolve()
    identifier, used = _identifier(spec, columns)
    stream: dict[str, Any] = {
        "name": spec.kind,
        "source": {"path": str(spec.file.resolve())},
        "kind": spec.kind,
        "identifier": identifier,
    }
    formats = spec.date_formats
    if spec.kind == "attributes":
        _refuse_flags(spec, {"--name-column": spec.name_column, "--event-name": spec.event_name,
                             "--time-column": spec.time_column, "--product-column": spec.product_column,
                             "--price-column": spec.price_column, "--currency-column": spec.currency_column,
                             "--quantity-column": spec.quantity_column})  # fmt: skip
        attrs = []
        for column, kind, to, given in _mapped(spec, columns, used):
            if kind == "date" and not given and (to or column) != "dob":
                kind = "time"  # an inferred date-only column is sent as a time Braze can segment on
            attrs.append({**_value(column, kind, formats), **({"to": to} if to else {})})
        if not attrs:
            raise ConfigError(
                f"{spec.file}: no column left to send besides the identifier; add columns or --map"
            )
        stream["attributes"] = attrs
    else:
        slots = {f: _field_column(spec, f, columns) for f in _FIELD_FLAGS[spec.kind]}
        mapping: dict[str, Any] = {f: _value(c, "time", formats) if f == "time" else _value(c, columns[c], ())
                                   for f, c in slots.items()}  # fmt: skip
        used |= set(slots.values())
        if spec.kind == "events":
            _refuse_flags(spec, {"--product-column": spec.product_column, "--price-column": spec.price_column,
                                 "--currency-column": spec.currency_column,
                                 "--quantity-column": spec.quantity_column})  # fmt: skip
            if (spec.name_column is None) == (spec.event_name is None) and "name" not in columns:
                raise ConfigError("--kind events needs the event name: --name-column COLUMN (per row) or "
                                  "--event-name NAME (one name for every row), not both")  # fmt: skip
            if spec.name_column is not None and spec.event_name is not None:
                raise ConfigError("give --name-column or --event-name, not both")
            if spec.event_name is not None:
                mapping["name"] = {"value": spec.event_name}
            else:
                name = _column("--name-column", spec.name_column, columns) if spec.name_column else "name"
                mapping["name"] = {"column": name}
                used.add(name)
        else:
            _refuse_flags(spec, {"--name-column": spec.name_column, "--event-name": spec.event_name})
            quantity = spec.quantity_column or ("quantity" if "quantity" in columns else None)
            if quantity is not None:
                mapping["quantity"] = _value(_column("--quantity-column", quantity, columns), "integer", ())
                used.add(quantity)
        if "app_id" in columns and not spec.maps:
            mapping["app_id"] = {"column": "app_id"}  # Braze's own field of events and purchases
            used.add("app_id")
        props: dict[str, Any] = {}
        for column, kind, to, _ in _mapped(spec, columns, used):
            if column == "properties" and kind == "object" and to is None and not spec.maps:
                props["json_column"] = column  # a JSON column of properties: its keys become the properties
            else:
                props.setdefault("columns", {})[to or column] = _value(column, kind, formats)
        if props:
            mapping["properties"] = props
        stream["event" if spec.kind == "events" else "purchase"] = mapping
    name = spec.name or _default_name(spec.file)
    data = {
        "name": name,
        "description": f"braze-connector upload {spec.file.name} --kind {spec.kind}",
        "destination": {"url": spec.endpoint, "api_key_env": spec.api_key_env},
        "report": {"dir": str(workdir / (spec.report_dir or Path("reports/{pipeline}/{run_id}"))),
                   "history": str(workdir / "reports" / "{pipeline}" / "history.jsonl")},
        "state": {"path": str(workdir / "state" / "{pipeline}.sqlite")},
        "streams": [stream],
        "base_dir": str(workdir),
    }  # fmt: skip
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"upload {spec.file}: {where}: {first['msg'].removeprefix('Value error, ')}"
        ) from None
    found = problems(pipeline)  # what load_pipeline checks too (time formats, ...): the written file loads
    if found:
        raise ConfigError(f"upload {spec.file}: {found[0]}")
    return pipeline


def _default_name(file: Path) -> str:
    """upload-<file stem>, reduced to the characters a pipeline name may hold."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", file.stem).strip("._-") or "file"
    name = f"upload-{stem}"[:100]
    return name if NAME_PATTERN.fullmatch(name) else "upload"


__all__ = ["MAP_SYNTAX", "MapSpec", "UploadKind", "UploadSpec", "build_upload", "parse_map"]
