"""Delta sync's fast path for one stream, chunk by chunk: the rows taken as unchanged before they are
validated or mapped (rowprint.py computes the prints; DeltaState.unchanged_rows decides which match).

stages.py opens one `FastPath` per delivered delta stream (`fast_path`, None where it does not apply) and
hands it each chunk between reading and validating; `take` returns the rows left (and their prints, which
ride along to the object comparison so a confirmed record gets its print) and how many it took. The rows
taken are settled for the incremental watermark here; stages.py counts them as skipped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from connector.config import Stream
from connector.delta.rowprint import RowPrint, row_print
from connector.delta.users import ChunkUsers
from connector.mapping import columns_read
from connector.records import Chunk

if TYPE_CHECKING:
    from connector.delta.incremental import Incremental
    from connector.delta.memo import Memo
    from connector.delta.state import DeltaState
    from connector.validation import SuiteRunner

logger = logging.getLogger(__name__)


def fast_path(state: DeltaState, stream: Stream, suite: SuiteRunner | None,
              incremental: Incremental | None) -> FastPath | None:  # fmt: skip
    """The stream's fast path for a run that delivers (not a resumed one: the caller decides that); None
    where it does not apply (not a delta stream, an operation, a suite whose verdicts are not row by row,
    a state that keeps no prints)."""
    if not stream.delta or not state.keeps_prints:
        return None
    if suite is not None and (why := suite.row_alone()) is not None:
        logger.info("stream %s: no fast path for unchanged rows: %s", stream.name, why)
        return None
    rowprint = row_print(stream, columns_read(stream), suite.columns if suite is not None else (),
                         suite.described() if suite is not None else [])  # fmt: skip
    if rowprint is None:
        return None
    memo = None
    if state.memo is not None:
        from connector.delta.memo import Memo

        memo = Memo(state.memo / xxhash.xxh3_64_hexdigest(stream.name.encode()))
    return FastPath(state, stream, rowprint, incremental, memo)


class FastPath:
    """One stream's source prints and the state they are compared with."""

    def __init__(self, state: DeltaState, stream: Stream, rowprint: RowPrint, incremental: Incremental | None,
                 memo: Memo | None = None) -> None:  # fmt: skip
        self.state, self.stream, self.rowprint, self.incremental = state, stream, rowprint, incremental
        self.memo = memo
        # The chunk users() last read, its content digest and what the memo holds for it.
        self._read: tuple[Chunk, str | None, tuple[np.ndarray | None, np.ndarray | None, np.ndarray] | None] | None = None

    def users(self, chunk: Chunk) -> ChunkUsers:
        """The users of the chunk's rows (made when first asked), their key hashes from the memo where the same
        chunk was read before (memo.py); call before take() with the same chunk."""
        users = ChunkUsers(self.stream, chunk)
        self._read = None
        if self.memo is not None and len(chunk):
            from connector.delta.memo import content

            digest = content(chunk.table, self.rowprint.seed)
            got = self.memo.get(digest) if digest is not None else None
            if got is not None and got[0] is not None and got[1] is not None:
                users.preset(got[0], got[1])
            self._read = (chunk, digest, got)
        return users

    def close(self, complete: bool) -> None:
        """The stream's read ended (`complete`: every chunk was read): the memo written for the next run."""
        if self.memo is not None:
            self.memo.close(complete)

    def take(self, chunk: Chunk, users: ChunkUsers | None = None) -> tuple[Chunk, np.ndarray | None, int]:
        """The chunk without the rows whose source print is the one stored with their user's confirmed
        record, the prints of the rows left (None: the chunk has none), and how many rows were taken.
        `users`: the rows' users, when mirror mode or users() read them already (their key hashes are made once)."""
        read, self._read = (self._read if self._read is not None and self._read[0] is chunk else None), None
        got = read[2] if read is not None else None
        prints = got[2] if got is not None else self.rowprint.prints(chunk.table)
        out = self._take(chunk, users, prints)
        if read is not None and read[1] is not None and prints is not None and self.memo is not None:
            made = users.made() if users is not None else None
            if made is None and users is not None and got is None:
                # Not made by this run (a first run: no lookup, no mirror listing), made for the next one, which
                # would otherwise hash every key again (about 0.07 s a million rows, on a run bound by the rate
                # limit here, against one bound by CPU next); not where the keys are made in Python (aliases).
                made = users.hashed_from_arrow()
            if got is not None and got[0] is not None and made is not None and made[1] is got[1]:
                self.memo.again(read[1])  # as the memo has it: nothing to hash or copy
            else:
                self.memo.put(read[1], made, prints)
        return out

    def _take(self, chunk: Chunk, users: ChunkUsers | None, prints: np.ndarray | None) -> tuple[Chunk, np.ndarray | None, int]:
        if prints is None or not self.state.may_skip(self.stream.name):
            return chunk, prints, 0
        if users is None:
            users = ChunkUsers(self.stream, chunk)
        skip = self.state.unchanged_rows(self.stream.name, users, prints)
        n = int(np.count_nonzero(skip))
        if not n:
            return chunk, prints, 0
        if self.incremental is not None:
            self.incremental.skipped(self.stream, [chunk.ref(i) for i in np.flatnonzero(skip).tolist()])
        keep = ~skip
        return chunk.filter(keep), prints[keep], n
