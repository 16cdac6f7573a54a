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

from connector.config import Stream
from connector.delta.rowprint import RowPrint, row_print
from connector.delta.users import ChunkUsers
from connector.mapping import columns_read
from connector.records import Chunk

if TYPE_CHECKING:
    from connector.delta.incremental import Incremental
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
    return None if rowprint is None else FastPath(state, stream, rowprint, incremental)


class FastPath:
    """One stream's source prints and the state they are compared with."""

    def __init__(self, state: DeltaState, stream: Stream, rowprint: RowPrint, incremental: Incremental | None,
                 ) -> None:  # fmt: skip
        self.state, self.stream, self.rowprint, self.incremental = state, stream, rowprint, incremental

    def take(self, chunk: Chunk, users: ChunkUsers | None = None) -> tuple[Chunk, np.ndarray | None, int]:
        """The chunk without the rows whose source print is the one stored with their user's confirmed
        record, the prints of the rows left (None: the chunk has none), and how many rows were taken.
        `users`: the rows' users, when mirror mode read them already (their key hashes are made once)."""
        prints = self.rowprint.prints(chunk.table)
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
