"""The mapper's implementation: vectorised casts (casts), Value resolution (columns), object building (objects)."""

from __future__ import annotations
