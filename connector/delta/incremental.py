"""The pipeline's side of incremental streams: which rows of a chunk to process, and the outcomes it decides.

Braze's answers reach the watermark through the writer (`Writer(settled=...)`); the outcomes the pipeline
decides itself (rejected by a suite, the mapping or the contract; unchanged for delta sync; not delivered
because a table check failed) are settled here. The semantics are in watermark.py.
"""

from __future__ import annotations

from connector.config import Stream
from connector.delta.watermark import Outcome, StreamMark, Watermarks
from connector.readers import Since
from connector.readers.cursor import cursor_values, row_ids
from connector.records import Chunk, MappedChunk, Rejected, RowRef


class Incremental:
    """The run's incremental streams over one Watermarks state."""

    def __init__(self, marks: Watermarks) -> None:
        self.marks = marks

    def since(self, stream: Stream) -> Since | None:
        """What an SQL read pushes into its query: order by the cursor, from the stored watermark."""
        if stream.incremental is None:
            return None
        return Since(stream.incremental.cursor, self.marks.stored(stream.name, stream.incremental.cursor))

    def _mark(self, stream: Stream) -> StreamMark | None:
        if stream.incremental is None:
            return None
        return self.marks.mark(stream.name, stream.incremental.cursor, ordered=stream.source.is_sql)

    def take(self, stream: Stream, chunk: Chunk) -> Chunk:
        """The chunk without the rows already done (and, for files, those under the watermark); the rest is
        tracked until its outcome is settled. Parse rejects are kept as they are (they have no cursor)."""
        mark = self._mark(stream)
        if mark is None or not len(chunk):
            return chunk
        values = cursor_values(chunk, mark.cursor, parse_text=not stream.source.is_sql)
        refs = [chunk.ref(i) for i in range(len(chunk))]
        keep = mark.take(refs, values, row_ids(chunk), below=not stream.source.is_sql)
        if all(keep):
            return chunk
        kept = chunk.filter(keep)
        kept.rejects = chunk.rejects
        return kept

    def rejected(self, stream: Stream, rejects: list[Rejected]) -> None:
        if stream.incremental is not None and rejects:
            self.marks.settle(stream.name, [r.ref for r in rejects], "rejected")

    def settle(self, stream: Stream, mapped: MappedChunk, outcome: Outcome) -> None:
        """Every object of `mapped` got `outcome` without reaching the writer."""
        if stream.incremental is not None and len(mapped):
            self.marks.settle(stream.name, [mapped.ref(j) for j in range(len(mapped))], outcome)

    def unchanged(self, stream: Stream, before: MappedChunk, after: MappedChunk) -> None:
        """Rows delta sync dropped as unchanged are done."""
        if stream.incremental is None or len(before) == len(after):
            return
        sent = set(after.indices)
        refs = [before.ref(j) for j, i in enumerate(before.indices) if i not in sent]
        self.marks.settle(stream.name, refs, "skipped")

    def skipped(self, stream: Stream, refs: list[RowRef]) -> None:
        """Rows delta sync's fast path dropped as unchanged, before they were validated: done."""
        if stream.incremental is not None and refs:
            self.marks.settle(stream.name, refs, "skipped")

    def finish(self, stream: Stream, complete: bool) -> None:
        """The stream was read to its end, or stopped early."""
        mark = self._mark(stream)
        if mark is not None:
            mark.finish(complete)

    def close(self) -> None:
        self.marks.close()
