"""Regex search over Arrow string columns with Python ``re`` semantics, RE2 (pyarrow) where it is the same.

GX's pandas engine tests ``column.astype(str).str.contains(regex)``: a ``re.search`` per value (pandas hands
the pattern to pyarrow's RE2 only where the two agree). Here a pattern is compiled once into a `Pattern`:

- RE2 (``pc.match_substring_regex``, search semantics) when Python's parse of the pattern holds nothing RE2
  reads differently: no lookarounds, backreferences, conditionals, inline flags, ``\\s``/``\\S`` (RE2 misses
  "\\x0b" and Unicode spaces), escapes of digits or ``\\u``/``\\U``/``\\N``, ``{,n}`` (a literal in RE2),
  ``[:`` (a POSIX class in RE2), and RE2 compiles it. ``\\d``/``\\w``/``\\b`` are Unicode-aware in Python and
  ASCII in RE2, so they use RE2 only on chunks whose values are all ASCII; ``$`` also matches before a final
  newline in Python, so it uses RE2 only on chunks without newlines.
- Python ``re.search`` otherwise, once per distinct value of the chunk.
- None (`compile_pattern`) when Python cannot compile it: GX then evaluates it, and reports its own error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _parser as _sre_parse  # type: ignore[attr-defined]  # Python's own parse of a pattern
from typing import Any

_UNSAFE_TEXT = re.compile(r"\\[0-9uUN]|\{,|\[:")
_NEVER = {"ASSERT", "ASSERT_NOT", "GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE", "GROUPREF_UNI_IGNORE"}
_SPACE = {"CATEGORY_SPACE", "CATEGORY_NOT_SPACE"}
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
    """One regex, compiled once: how to search a string column with Python's verdict."""

    text: str
    compiled: re.Pattern[str]
    re2: bool  # RE2 may be used at all
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
    """The Pattern for `text`, or None when Python's ``re`` cannot compile it (left to GX)."""
    try:
        compiled = re.compile(text)
        parsed = _sre_parse.parse(text)
    except (re.error, TypeError, RecursionError, OverflowError):
        return None
    ops: set[str] = set()
    _collect(parsed, ops)
    flags = int(parsed.state.flags) & ~int(re.UNICODE)
    re2 = not (ops & (_NEVER | _SPACE | {"INLINE_FLAGS"}) or flags or _UNSAFE_TEXT.search(text))
    if re2 and not _re2_compiles(text):
        re2 = False
    return Pattern(text, compiled, re2, bool(ops & _ASCII_ONLY), "AT_END" in ops)


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
