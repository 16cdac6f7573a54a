"""Paths derived from a template and a name (`reports/{pipeline}/{run_id}`, `state/{pipeline}.sqlite`).

The pipeline name is restricted to a safe character set (models.py), and every derived path is checked
again here: once its placeholders are filled, it must stay inside the folder the template names before
its first placeholder (its root), whatever the values, so that no name can write a report or a state file
elsewhere (`../../x`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from connector.errors import ConfigError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
NAME_RULE = "letters, digits, '_', '-' and '.', starting with a letter or digit, at most 100 characters"


def fill_template(template: str, key: str, values: dict[str, str], base: Path | None = None) -> Path:
    """`template` with each `{name}` of `values` filled in (relative to `base` when given and relative).

    Raises:
        ConfigError: another placeholder is left, or the filled path leaves the template's root.
    """
    text = template
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    if "{" in text or "}" in text:
        allowed = " and ".join("{" + n + "}" for n in values)
        raise ConfigError(f"{key} {template!r}: only the placeholders {allowed} are allowed")
    path = Path(text)
    cut = template.find("{")
    if cut < 0:
        return path if base is None or path.is_absolute() else base / path
    prefix = template[:cut]
    root = Path(prefix) if prefix.endswith(("/", os.sep)) or not prefix else Path(prefix).parent
    if base is not None:
        path = path if path.is_absolute() else base / path
        root = root if root.is_absolute() else base / root
    if not _inside(path, root):
        raise ConfigError(
            f"{key} {template!r}: filled in, it names {path}, outside {root}; the values of "
            f"{', '.join('{' + n + '}' for n in values)} must not contain '..' or '/'"
        )
    return path


def _inside(path: Path, root: Path) -> bool:
    resolved_root = root.resolve()
    resolved = path.resolve()
    return resolved == resolved_root or resolved_root in resolved.parents
