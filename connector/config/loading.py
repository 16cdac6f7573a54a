"""Loading a pipeline file: YAML (duplicate keys refused), the models, checks the models cannot express,
and messages that name the file, the key, what is allowed and how to fix it."""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ValidationError

from connector.config.interpolate import interpolate
from connector.config.mappings import Value
from connector.config.models import Pipeline
from connector.errors import ConfigError


def _given(value: Any) -> str:
    """The value a user wrote, shown short in an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc` (a key path of pydantic's), or of the deepest node on the
    way that the file has (a missing key: its mapping); None when the document is not at hand. Parts
    pydantic adds that are not keys (a union member's tag, say) end the walk."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not found:
                break
            key, node = found[-1]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format_errors(path: str, err: ValidationError, root: yaml.Node | None = None) -> str:
    lines = [f"{path}: the pipeline file is not valid ({err.error_count()} problem(s)):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        line = _line(root, tuple(e["loc"]))
        if line is not None:
            loc = f"line {line}: {loc}"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling (see pipeline.schema.json)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif not isinstance(e.get("input"), dict | list):
            msg = f"{msg} (got {_given(e.get('input'))})"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def problems(pipeline: Pipeline) -> list[str]:
    """Checks the models cannot make alone: suites exist, time zones, time formats, CSV dialect; one line each."""
    out: list[str] = []
    rest = pipeline.report.dir.replace("{pipeline}", "").replace("{run_id}", "").replace("{partition}", "")
    if "{" in rest or "}" in rest:
        out.append(f"report.dir: only the placeholders {{pipeline}}, {{run_id}} and {{partition}} are allowed (got {pipeline.report.dir!r})")
    suites = pipeline.resolve(pipeline.expectations_dir)
    for i, stream in enumerate(pipeline.streams):
        for j, name in enumerate(stream.expectations):
            if not (suites / f"{name}.json").is_file():
                have = sorted(f.stem for f in suites.glob("*.json")) if suites.is_dir() else []
                out.append(
                    f"streams.{i}.expectations.{j}: no suite {name!r} ({suites / name}.json does not exist); "
                    + (f"suites in {suites}: {', '.join(have)}" if have else f"expectations_dir {suites} holds no suites")
                )
        csv = stream.source.csv
        for name in ("delimiter", "quote_char"):
            val = getattr(csv, name)
            if len(val) != 1 or not val.isascii():
                out.append(f"streams.{i}.source.csv.{name}: must be one ASCII character such as ',' (got {val!r})")
        try:
            codecs.lookup(csv.encoding)
        except LookupError:
            out.append(
                f"streams.{i}.source.csv.encoding: unknown encoding {csv.encoding!r}; use e.g. utf-8, utf-8-sig, latin-1, cp1252"
            )
        for loc, value in _values(stream, f"streams.{i}"):
            if value.timezone is not None:
                try:
                    ZoneInfo(value.timezone)
                except (ZoneInfoNotFoundError, ValueError):
                    out.append(
                        f"{loc}.timezone: unknown time zone {value.timezone!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
                    )
            formats = [value.format] if isinstance(value.format, str) else value.format or []
            for k, fmt in enumerate(formats):
                if bad := _bad_time_format(fmt):
                    at = f"{loc}.format" if isinstance(value.format, str) else f"{loc}.format.{k}"
                    out.append(
                        f"{at}: {bad}; use strptime directives such as '%Y-%m-%d %H:%M:%S' (or leave it out for ISO 8601)"
                    )
    return out


def _values(model: Any, loc: str) -> Iterator[tuple[str, Value]]:
    """Every Value inside a model, with its key path."""
    if isinstance(model, Value):
        yield loc, model
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            yield from _values(getattr(model, name), f"{loc}.{name}")
    elif isinstance(model, list | tuple):
        for j, item in enumerate(model):
            yield from _values(item, f"{loc}.{j}")
    elif isinstance(model, dict):
        for key, item in model.items():
            yield from _values(item, f"{loc}.{key}")


def _bad_time_format(fmt: str) -> str | None:
    """Why a strptime format cannot work ("'Q' is a bad directive..."), or None."""
    try:
        datetime.strptime("", fmt)
    except ValueError as e:
        text = str(e)
        if "bad directive" in text or "stray %" in text:
            return text
    return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last one).

    Keys brought in by a merge (`<<: *defaults`) may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (first at line {first}); keep one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-untyped-call,no-any-return]


# Values in a pipeline file once its aliases are expanded: real files have hundreds. An alias bomb (each
# level an alias repeating the one below) reaches billions from a few lines, and then every walk over the
# values (validation, these checks) hangs; it is refused before anything is built.
MAX_YAML_VALUES = 100_000


def _parse_yaml(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    """The YAML document and its node tree (for the lines of error messages), refused (ConfigError) when its aliases expand it past MAX_YAML_VALUES values,
    when an alias refers to a node that holds it, or when it nests too deeply to read."""
    loader = _UniqueKeyLoader(text)
    try:
        try:
            node = loader.get_single_node()  # type: ignore[no-untyped-call]
        except RecursionError:
            raise ConfigError(f"{path}: the YAML nests too deeply to read; a pipeline file needs a few levels") from None
        if node is None:
            return None, None
        size = _expanded_size(node, MAX_YAML_VALUES)
        if size is None:
            raise ConfigError(f"{path}: a YAML alias (*name) refers to a block that contains it; remove that alias")
        if size > MAX_YAML_VALUES:
            raise ConfigError(
                f"{path}: the YAML expands to over {MAX_YAML_VALUES:,} values once its aliases (*name) are "
                "replaced by what they name (an alias bomb?); a pipeline file needs far fewer: remove the aliases "
                "that repeat large blocks"
            )
        return loader.construct_document(node), node  # type: ignore[no-untyped-call]
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def _expanded_size(root: yaml.Node, limit: int) -> int | None:
    """How many nodes the document has with every alias expanded (capped just past `limit`), without
    expanding anything: a node's size is computed once and counted at each reference. None: a cycle."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        kids = _children(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = min(1 + sum(sizes[id(k)] for k in kids), limit + 1)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            return None  # reached again from below itself: a recursive alias
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _placeholder_hint(text: str, mark: Any) -> str:
    """A path placeholder ({pipeline}, {run_id}, {partition}) unquoted inside a {...} flow mapping is read
    as a nested mapping: say to quote it, when the line the parser stopped at holds one."""
    if mark is None:
        return ""
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    if "{" in line.split("#", 1)[0] and any(f"{{{name}}}" in line for name in ("pipeline", "run_id", "partition")):
        return ("; a placeholder such as {pipeline} inside a {...} mapping must be quoted, e.g. "
                'state: {path: "state/{pipeline}.sqlite"}')
    return ""


def load_pipeline(path: str | Path, env: Mapping[str, str] | None = None,
                  missing: Callable[[str], str] | None = None) -> Pipeline:  # fmt: skip
    """Read and validate a pipeline YAML file; `${VAR}` and `${VAR:-default}` are filled from `env`
    (default: the process environment); `missing` gives an unset variable without a default its value
    (default: that is an error).

    Raises:
        ConfigError: the file is missing, not YAML, or breaks the schema; the message names the file,
            the key and what is allowed.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: pipeline file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save the pipeline file as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the pipeline file ({e.strerror or e})") from None
    try:
        data, root = _parse_yaml(p, text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}{_placeholder_hint(text, mark)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a pipeline file must be a YAML mapping with 'name' and 'streams'")
    data = interpolate(data, os.environ if env is None else env, p, missing=missing)
    if "base_dir" in data:
        raise ConfigError(f"{p}: 'base_dir' is set by the loader, remove it from the file")
    data["base_dir"] = str(_project_root_for(p))
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(str(p), e, root)) from None
    pipeline._file = str(p)
    found = problems(pipeline)
    if found:
        head = f"{p}: the pipeline file is not valid ({len(found)} problem(s)):"
        raise ConfigError("\n".join([head, *(f"  - {x}" for x in found)]))
    return pipeline


def _project_root_for(pipeline_path: Path) -> Path:
    """Relative paths in a pipeline file resolve against the folder holding pipelines/, else the file's folder."""
    folder = pipeline_path.resolve().parent
    return folder.parent if folder.name == "pipelines" else folder


def pipeline_json_schema() -> dict[str, Any]:
    schema = Pipeline.model_json_schema()
    schema.get("properties", {}).pop("base_dir", None)
    schema["title"] = "braze-connector pipeline file"
    return schema


def dump_pipeline(pipeline: Pipeline, header: str = "") -> str:
    """A pipeline as the YAML of a pipeline file (keys at their defaults left out, but the destination and its
    key's variable always shown); `header` becomes comments."""
    data = pipeline.model_dump(mode="json", exclude_defaults=True, exclude={"base_dir"})
    dest = pipeline.destination
    shown = {"url": dest.url, "api_key_env": dest.api_key_env, **data.pop("destination", {})}
    data = {k: v for k, v in data.items() if k in ("name", "description")} | {"destination": shown} | data
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + yaml.safe_dump(_literal(data), sort_keys=False, allow_unicode=True, width=120)


def _literal(data: Any) -> Any:
    """Values with every `$` written `$$`, so loading the file (which fills `${VAR}`) gives them back as they are."""
    if isinstance(data, str):
        return data.replace("$", "$$")
    if isinstance(data, dict):
        return {k: _literal(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_literal(v) for v in data]
    return data
