"""Map chunks of source rows to Braze objects (the implementation lives in connector/mapping/).

`map_chunk(stream, chunk, now) -> MappedChunk` and `user_key(obj) -> str` are the public interface; see
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from connector.mapping.objects import map_chunk, user_key

__all__ = ["map_chunk", "user_key"]
