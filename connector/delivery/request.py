"""One HTTP request body ready to post (`Request`), where each object sits in it (`PackedItem`), where
a request should end so that two requests share no user (`user_cut`), and the windows of positions the
single-array packers cut requests from (`windows`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PackedItem:
    """Where an object sits in a request body: (array, index within that array) as Braze reports errors."""

    array: str
    index: int
    token: Any
    user_key: str


class Request:
    """One HTTP request body ready to post, with the objects it carries in source order.

    `oversize` is set when a single object alone exceeds the byte cap: the writer rejects it instead of
    sending it. The objects are kept as parallel columns (array, index, token, user key); `items` builds
    the PackedItem list only when asked (error handling), so the packing path creates no object per item.
    """

    __slots__ = (
        "endpoint",
        "body",
        "oversize",
        "_arrays",
        "_indices",
        "_tokens",
        "_keys",
        "_items",
        "_where",
    )

    def __init__(
        self, endpoint: str, body: bytes, items: Sequence[PackedItem], oversize: bool = False
    ) -> None:
        self.endpoint = endpoint
        self.body = body
        self.oversize = oversize
        self._items: list[PackedItem] | None = list(items)
        self._arrays: str | list[str] = [i.array for i in self._items]
        self._indices: list[int] | None = [i.index for i in self._items]
        self._tokens: list[Any] = [i.token for i in self._items]
        self._keys: list[str] = [i.user_key for i in self._items]
        self._where: dict[tuple[str, int], int] | None = None

    @classmethod
    def packed(
        cls,
        endpoint: str,
        body: bytes,
        arrays: str | list[str],
        indices: list[int] | None,
        tokens: list[Any],
        keys: list[str],
        oversize: bool = False,
    ) -> Request:
        """A request from columns: `arrays` is one name when every object sits in that array, and then
        `indices` is None (object i is at index i)."""
        self = cls.__new__(cls)
        self.endpoint, self.body, self.oversize = endpoint, body, oversize
        self._arrays, self._indices, self._tokens, self._keys = arrays, indices, tokens, keys
        self._items = None
        self._where = None
        return self

    @property
    def items(self) -> list[PackedItem]:
        """The objects in source order, each with its (array, index) in the body."""
        if self._items is None:
            n = len(self._tokens)
            arrays = [self._arrays] * n if isinstance(self._arrays, str) else self._arrays
            indices = range(n) if self._indices is None else self._indices
            self._items = list(map(PackedItem, arrays, indices, self._tokens, self._keys))
        return self._items

    @property
    def count(self) -> int:
        """How many objects the request carries."""
        return len(self._tokens)

    @property
    def tokens(self) -> list[Any]:
        """The writer's tokens of the objects, in source order (do not modify)."""
        return self._tokens

    @property
    def keys(self) -> list[str]:
        """The user key of each object, in source order, repeats included (do not modify)."""
        return self._keys

    def user_keys(self) -> set[str]:
        """The profiles this request touches."""
        return set(self._keys)

    def find(self, array: str, index: int) -> PackedItem | None:
        """The object Braze names by (input_array, index), or None if the pair is not in this request."""
        if isinstance(self._arrays, str):
            ok = array == self._arrays and 0 <= index < len(self._tokens)
            return self.items[index] if ok else None
        if self._where is None:
            assert self._indices is not None
            self._where = {
                (a, i): k for k, (a, i) in enumerate(zip(self._arrays, self._indices, strict=True))
            }
        k = self._where.get((array, index))
        return None if k is None else self.items[k]

    def __repr__(self) -> str:
        return f"Request({self.endpoint!r}, {len(self.body)} bytes, {self.count} objects, oversize={self.oversize})"


def user_cut(keys: list[str], m: int, next_key: str | None) -> int:
    """Where to close a request of keys[:m] followed by `next_key`: if the cut falls inside one user's run
    and that user has no earlier object in the request, the run moves whole to the next request, so the
    two requests share no user (input sorted by user would otherwise chain every request to the previous
    one). Never returns 0."""
    if next_key is None or m < 2 or keys[m - 1] != next_key:
        return m
    r = m - 1
    while r > 0 and keys[r - 1] == next_key:
        r -= 1
    return r if r > 0 and next_key not in keys[:r] else m


# A packer's request for one window: (tokens: the window's positions, keys: their user keys, next_key: the
# user key after the window or None) -> the request holding the first `count` of them.
WindowRequest = Callable[[Sequence[int], list[str], "str | None"], Request]


def windows(user_keys: Sequence[str], positions: Sequence[int], max_objects: int,
            build: WindowRequest) -> Iterator[Request]:  # fmt: skip
    """The requests `build` makes over `positions` in order: each from a window of the next `max_objects`
    positions (a `range` when they are consecutive, so the caller can slice its columns), taking
    `request.count` of them; the next window starts after those."""
    pos = positions if isinstance(positions, range) and positions.step == 1 else list(positions)
    contiguous = isinstance(pos, range)
    n = len(pos)
    start = 0
    while start < n:
        end = min(start + max_objects, n)
        if contiguous:
            lo = pos[start]
            tokens: Sequence[int] = range(lo, lo + end - start)
            keys = list(user_keys[lo : lo + end - start])
        else:
            tokens = pos[start:end]
            keys = list(map(user_keys.__getitem__, tokens))
        req = build(tokens, keys, user_keys[pos[end]] if end < n else None)
        yield req
        start += req.count
