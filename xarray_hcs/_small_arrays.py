"""Whole reads of small zarr arrays (table columns) without zarr's per-array machinery.

An AnnData table is a dozen tiny arrays; through zarr each costs ~0.5 ms of codec-pipeline
and event-loop overhead, which is most of the time of concatenating a plate's tables. Here
the chunks are fetched with the plate store's own (bounded) reads and decoded by the one
chunk reader (:class:`._chunks.ArrayReader`). Arrays whose codecs only zarr applies return
None and the caller lets zarr read them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._chunks import ArrayReader

if TYPE_CHECKING:
    from .store import ArrayInfo, PlateStore

__all__ = ["read_small_array"]


async def read_small_array(ps: PlateStore, info: ArrayInfo) -> np.ndarray | None:
    """The whole array at ``info`` (read with ``ps``), or None if it needs zarr."""
    from .store import join_path

    fmt = info.format
    if fmt is None:
        return None

    async def fetch(key: str, limit: int, byte_range: Any) -> bytes | None:
        return await ps.read_bytes(join_path(info.path, key), limit, byte_range)

    rel = info.path[len(ps.root) + 1:] if ps.root else info.path
    reader = ArrayReader(fmt, ps.where(rel), fetch=fetch)
    return await reader.aread(tuple(slice(None) for _ in fmt.shape))
