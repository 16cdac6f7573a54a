"""`${VAR}` and `${VAR:-default}` in a pipeline file's values, filled from the environment.

Only values are filled (never keys), after the YAML is parsed, so a variable cannot add structure to the
file. `${VAR:-default}` uses the default when VAR is unset or empty (as the shell does); `$$` writes one
`$`. A variable that is unset, with no default, is a ConfigError naming the file, the key and the variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from connector.errors import ConfigError

_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(data: Any, env: Mapping[str, str], file: str | Path, loc: str = "",
                memo: dict[int, Any] | None = None, missing: Callable[[str], str] | None = None) -> Any:  # fmt: skip
    """A copy of `data` (parsed YAML) with every `${...}` in its string values filled from `env`; `missing`
    gives the value of a variable that is unset and has no default (None: that is an error).

    A node that YAML aliases share (`*anchor`) is filled once and stays shared, so aliases never
    multiply the work.

    Raises:
        ConfigError: a variable is unset and has no default, or a `${...}` is malformed.
    """
    if isinstance(data, str):
        return _fill(data, env, file, loc or "(top level)", missing)
    if not isinstance(data, dict | list):
        return data
    memo = {} if memo is None else memo
    if id(data) in memo:
        return memo[id(data)]
    if isinstance(data, dict):
        out: Any = {k: interpolate(v, env, file, f"{loc}.{k}" if loc else str(k), memo, missing)
                    for k, v in data.items()}  # fmt: skip
    else:
        out = [interpolate(v, env, file, f"{loc}.{i}" if loc else str(i), memo, missing) for i, v in enumerate(data)]
    memo[id(data)] = out
    return out


def _fill(text: str, env: Mapping[str, str], file: str | Path, loc: str,
          missing: Callable[[str], str] | None = None) -> str:  # fmt: skip
    if "$" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        inner = m.group(1)
        name, sep, default = inner.partition(":-")
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{file}: {loc}: '${{{inner}}}' is not a variable; write ${{NAME}} or ${{NAME:-default}} "
                "(NAME: letters, digits, _), or $$ for a literal $"
            )
        value = env.get(name)
        if value:
            return value
        if sep:
            return default
        if value is None:
            if missing is not None:
                return missing(name)
            raise ConfigError(
                f"{file}: {loc}: environment variable {name} is not set; set it or give a default "
                f"with ${{{name}:-default}}"
            )
        return value

    return _TOKEN.sub(one, text)
