"""Regex search over Arrow string columns with GX's verdict: Python ``re`` or RE2 exactly where pandas uses them.

GX's pandas engine tests ``column.astype(str).str.contains(regex)`` on the non-null values. pandas (3.x,
pyarrow-backed strings) hands the pattern to pyarrow's RE2 unless it holds lookarounds, backreferences,
``\\s``/``\\S`` or ``\\u``/``\\U``/``\\N`` escapes, or unless ``\\d``/``\\w``/``\\b`` meet non-ASCII values or ``$``
meets a newline: then it runs Python's ``re.search`` per value. A pattern is compiled once into a `Pattern`
that makes the same choice per chunk:

- Python ``re.search`` (once per distinct value) where pandas uses it; for a pattern whose only such
  feature is ``\\s``/``\\S``, RE2 with ``\\s`` spelled as Python's whitespace class gives the same verdict;
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

# Python's \\s on str patterns (str.isspace), in RE2 syntax; tests check it against every code point.
PYTHON_SPACES = (
    r"\x{9}-\x{d}\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
)
_UNICODE_ESCAPE = re.compile(r"\\[uUN]")
_DIALECTS_DIFFER = re.compile(r"\\[0-9Z]|\{,|\[:")
_SPACE = {"CATEGORY_SPACE", "CATEGORY_NOT_SPACE"}
_PYTHON_ALWAYS = {"ASSERT", "ASSERT_NOT", "GROUPREF"} | _SPACE
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
    re2_text: str  # the pattern as RE2 reads it alike ("": Python's re, always)
    needs_ascii: bool  # ... only on chunks whose values are all ASCII
    needs_no_newline: bool  # ... only on chunks without a newline in any value

    def search(self, strings: Any) -> Any:
        """A boolean Arrow array: does the pattern occur in each value (null stays null)."""
        import pyarrow.compute as pc

        if self.re2_text and self._re2_fits(strings):
            return pc.match_substring_regex(strings, self.re2_text)
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
    ascii_only, newline = bool(ops & _ASCII_ONLY), "AT_END" in ops
    python = Pattern(text, compiled, "", False, False)
    flags = int(parsed.state.flags) & ~int(re.UNICODE)
    differ = bool(flags or "INLINE_FLAGS" in ops or _DIALECTS_DIFFER.search(text))
    if ops & _PYTHON_ALWAYS - _SPACE or _UNICODE_ESCAPE.search(text):
        return python
    if ops & _SPACE:  # pandas runs Python's re; RE2 agrees once \s is spelled as Python's class
        spelled = None if differ else _spell_spaces(text)
        if spelled is None or not _re2_compiles(spelled):
            return python
        return Pattern(text, compiled, spelled, ascii_only, newline)
    if differ or not _re2_compiles(text):
        return None
    return Pattern(text, compiled, text, ascii_only, newline)


def _spell_spaces(text: str) -> str | None:
    """`text` with ``\\s`` (and ``\\S`` outside classes) as Python's whitespace class; None if not possible."""
    out: list[str] = []
    i, in_class, class_body = 0, False, -1  # class_body: where a class's members start ("]" there is literal)
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            pair = text[i : i + 2]
            if pair == "\\s":
                out.append(PYTHON_SPACES if in_class else f"[{PYTHON_SPACES}]")
            elif pair == "\\S":
                if in_class:
                    return None
                out.append(f"[^{PYTHON_SPACES}]")
            else:
                out.append(pair)
            i += 2
            continue
        if in_class:
            if ch == "]" and i != class_body:
                in_class = False
        elif ch == "[":
            in_class = True
            class_body = i + 2 if text[i + 1 : i + 2] == "^" else i + 1
        out.append(ch)
        i += 1
    return "".join(out)


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

    from connector.arrow_values import array

    try:
        pc.match_substring_regex(array([""], pa.string()), text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _search_python(compiled: re.Pattern[str], strings: Any) -> Any:
    """``re.search`` per value (once per distinct value when values repeat), spread back over the rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from connector.arrow_values import array, null

    distinct = pc.unique(strings).drop_null()
    if 2 * len(distinct) > len(strings):  # mostly distinct values: matching the lot is cheaper than a lookup
        return array(
            [None if v is None else compiled.search(v) is not None for v in strings.to_pylist()], pa.bool_()
        )
    found = [v for v in distinct.to_pylist() if compiled.search(v) is not None]
    hits = pc.is_in(strings, value_set=array(found, distinct.type))
    return pc.if_else(pc.is_null(strings), null(pa.bool_()), hits)
