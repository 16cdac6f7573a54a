"""Regex search over Arrow string columns with GX's verdict: Python ``re`` or RE2 exactly where pandas uses them.

GX's pandas engine tests ``column.astype(str).str.contains(regex)`` on the non-null values. pandas (3.x,
pyarrow-backed strings) hands the pattern to pyarrow's RE2 unless it holds lookarounds, backreferences,
``\\s``/``\\S`` or ``\\u``/``\\U``/``\\N`` escapes, or unless ``\\d``/``\\w``/``\\b`` meet non-ASCII values or ``$``
meets a newline: then it runs Python's ``re.search`` per value. A pattern is compiled once into a `Pattern`
that makes the same choice per chunk:

- Python ``re.search`` (once per distinct value) where pandas uses it;
- RE2 (``pc.match_substring_regex``, search semantics) otherwise, when RE2 and Python read the pattern
  alike;
- None (`compile_pattern`) when they might not (inline flags, ``{,n}`` which RE2 reads as a literal,
  ``[:`` a POSIX class in RE2, escaped digits, ``\\Z``, anything RE2 cannot compile) or when Python cannot
  compile it: GX then evaluates that expectation, with whatever verdict or error it gives.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from re import _parser as _sre_parse  # type: ignore[attr-defined]  # Python's own parse of a pattern
from typing import Any

_UNICODE_ESCAPE = re.compile(r"\\[uUN]")
_DIALECTS_DIFFER = re.compile(r"\\[0-9Z]|\{,|\[:")
_PYTHON_ALWAYS = {"ASSERT", "ASSERT_NOT", "GROUPREF", "CATEGORY_SPACE", "CATEGORY_NOT_SPACE"}
_ASCII_ONLY = {
    "CATEGORY_DIGIT",
    "CATEGORY_NOT_DIGIT",
    "CATEGORY_WORD",
    "CATEGORY_NOT_WORD",
    "AT_BOUNDARY",
    "AT_NON_BOUNDARY",
}


@dataclass(frozen=True, slots=True)
class Pattern:
    """One regex, compiled once: how to search a string column with GX's verdict."""

    text: str
    compiled: re.Pattern[str]
    re2: bool  # RE2 may be used at all (else Python's re, always)
    needs_ascii: bool  # ... only on chunks whose values are all ASCII
    needs_no_newline: bool  # ... only on chunks without a newline in any value

    def search(self, strings: Any) -> Any:
        """A boolean Arrow array: does the pattern occur in each value (null stays null)."""
        import pyarrow.compute as pc

        if self.re2 and self._re2_fits(strings):
            return pc.match_substring_regex(strings, self.text)
        return _search_python(self.compiled, strings)

    def _re2_fits(self, strings: Any) -> bool:
        import pyarrow.compute as pc

        if self.needs_ascii and not pc.all(pc.string_is_ascii(strings), min_count=0).as_py():
            return False
        return not (self.needs_no_newline and pc.any(pc.match_substring(strings, "\n"), min_count=0).as_py())


def compile_pattern(text: str) -> Pattern | None:
    """The Pattern for `text`, or None when GX must evaluate it (see the module docstring)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" and the like: GX's pandas sees them too
            compiled = re.compile(text)
            parsed = _sre_parse.parse(text)
    except (re.error, TypeError, RecursionError, OverflowError):
        return None
    ops: set[str] = set()
    _collect(parsed, ops)
    if ops & _PYTHON_ALWAYS or _UNICODE_ESCAPE.search(text):
        return Pattern(text, compiled, False, False, False)
    flags = int(parsed.state.flags) & ~int(re.UNICODE)
    if flags or "INLINE_FLAGS" in ops or _DIALECTS_DIFFER.search(text) or not _re2_compiles(text):
        return None
    return Pattern(text, compiled, True, bool(ops & _ASCII_ONLY), "AT_END" in ops)


def _collect(items: Any, ops: set[str]) -> None:
    """Every opcode and category/position name in a parsed pattern, nested ones too."""
    for op, av in items:
        name = str(op)
        ops.add(name)
        if name in ("CATEGORY", "AT"):
            ops.add(str(av))
        elif name == "IN":
            _collect(av, ops)
        elif name == "SUBPATTERN":
            if av[1] or av[2]:  # (?i:...) and friends
                ops.add("INLINE_FLAGS")
            _collect(av[3], ops)
        elif name == "BRANCH":
            for branch in av[1]:
                _collect(branch, ops)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            _collect(av[2], ops)
        elif name == "ATOMIC_GROUP":
            _collect(av, ops)
        elif name == "GROUPREF_EXISTS":
            for branch in av[1:]:
                if branch is not None:
                    _collect(branch, ops)


def _re2_compiles(text: str) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.match_substring_regex(pa.array([""], pa.string()), text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _search_python(compiled: re.Pattern[str], strings: Any) -> Any:
    """``re.search`` once per distinct non-null value, spread back over the rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    distinct = pc.unique(strings).drop_null()
    found = [v for v in distinct.to_pylist() if compiled.search(v) is not None]
    hits = pc.is_in(strings, value_set=pa.array(found, type=distinct.type))
    return pc.if_else(pc.is_null(strings), pa.scalar(None, pa.bool_()), hits)
