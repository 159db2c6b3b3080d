"""Lazy arrays over zarr: an xarray ``BackendArray`` and cheap, path-named dask arrays.

Chunks are read by our own reader (:class:`._chunks.ArrayReader`): in the calling thread for
local plates, concurrently through the store for any other, bounded and checked either way.
Arrays whose codecs only zarr applies (a transpose, filters) are read through a zarr array
created on first access from the metadata document read while opening, so opening a plate
costs no per-array store read and no per-array zarr parsing. The wrapper pickles small
(store + path + document) for ``dask.distributed`` workers, which read on their side.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from functools import lru_cache
from typing import Any

import numpy as np
import zarr
from xarray.backends import BackendArray
from xarray.core import indexing

from ._chunks import ArrayReader
from .errors import HcsError, HcsReadError
from .store import ArrayInfo, PlateStore, join_path, run_sync

__all__ = ["ZarrLevelArray", "dask_array", "dask_chunked", "read_error_of"]


def read_error_of(e: BaseException, where: str) -> HcsError:
    """An error of zarr's own read path as an :class:`HcsError` naming the array."""
    if isinstance(e, HcsError):
        return e
    return HcsReadError(f"cannot be read ({type(e).__name__}: {e})", where)


class ZarrLevelArray(BackendArray):
    """One level (or label level) array of a plate, read on demand."""

    __slots__ = ("_array", "_lock", "_reader", "info", "plate_store", "shape", "dtype")

    def __init__(self, plate_store: PlateStore, info: ArrayInfo) -> None:
        self.plate_store = plate_store
        self.info = info
        self.shape = info.shape
        self.dtype = info.dtype
        self._array: zarr.Array | None = None
        self._reader: ArrayReader | None | bool = False  # False: not looked at yet
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"plate_store": self.plate_store, "info": self.info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["plate_store"], state["info"])  # type: ignore[misc]

    @property
    def where(self) -> str:
        ps = self.plate_store
        rel = self.info.path[len(ps.root) + 1:] if ps.root else self.info.path
        return ps.where(rel)

    @property
    def array(self) -> zarr.Array:
        if self._array is None:
            with self._lock:
                if self._array is None:
                    self._array = self.plate_store.zarr_array(self.info)
        return self._array

    def get_array(self) -> zarr.Array:
        """The underlying zarr array (created on first call)."""
        return self.array

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    @property
    def reader(self) -> ArrayReader | None:
        """Our chunk reader, for arrays whose codecs it knows; else None (zarr reads)."""
        if self._reader is False:
            fmt = self.info.format
            ps = self.plate_store
            if fmt is None:
                self._reader = None
            else:
                root = ps.local_root
                path = self.info.path

                async def fetch(key: str, limit: int, byte_range: Any) -> bytes | None:
                    return await ps.read_bytes(join_path(path, key), limit, byte_range)

                self._reader = ArrayReader(
                    fmt, self.where, local=None if root is None else os.path.join(root, path),
                    fetch=fetch, stamp=self.info.stamp, root=root)
        return self._reader  # type: ignore[return-value]

    def read_inline(self, key: tuple[Any, ...]) -> np.ndarray | None:
        """``key`` read in this thread (local plates), or None if that cannot be."""
        reader = self.reader
        return None if reader is None or reader.local is None else reader.read(key)

    async def aread(self, key: tuple[Any, ...]) -> np.ndarray:
        """``key`` read concurrently through the store (any store)."""
        reader = self.reader
        if reader is not None:
            return await reader.aread(key)
        try:
            aa = self.array._async_array
            if all(isinstance(k, slice | int | np.integer) for k in key):
                out = await aa.getitem(key)
            else:
                out = await aa.get_orthogonal_selection(key)
        except Exception as e:  # noqa: BLE001  zarr's codecs raise many kinds on bad data
            raise read_error_of(e, self.where) from None
        return np.asarray(out).astype(self.dtype, copy=False)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        out = self.read_inline(key)
        if out is not None:
            return out
        return run_sync(self.aread(key))


class _DaskSource:
    """What a dask task slices: plain tuples of slices into a lazy array of ours (a field
    level, or a stack of them), read in the task's own thread where it can be."""

    __slots__ = ("backend", "shape", "dtype", "ndim")

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.shape = backend.shape
        self.dtype = backend.dtype
        self.ndim = len(backend.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        out = self.backend.read_inline(key)
        return out if out is not None else np.asarray(self.backend._getitem(key))


def _read_chunk(source: _DaskSource, key: tuple[slice, ...]) -> np.ndarray:
    return source[key]


@lru_cache(maxsize=256)
def _chunk_plan(shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]
                ) -> tuple[tuple[tuple[int, ...], tuple[slice, ...]], ...]:
    """Block indices and the slices they read; shared by every array of one shape/chunking."""
    bounds = []
    for dim_chunks in chunks:
        edges = [0, *itertools.accumulate(dim_chunks)]
        bounds.append([(i, slice(edges[i], edges[i + 1])) for i in range(len(dim_chunks))])
    return tuple((tuple(i for i, _ in combo), tuple(sl for _, sl in combo))
                 for combo in itertools.product(*bounds))


def _graph_array(backend: Any, name: str, norm: tuple[tuple[int, ...], ...]) -> Any:
    """One graph layer of read tasks, built directly (no ``from_array`` machinery): at
    plate scale there are tens of thousands of arrays and this is on the open path."""
    from dask.array.core import Array
    from dask.highlevelgraph import HighLevelGraph

    source = _DaskSource(backend)
    layer = {(name, *idx): (_read_chunk, source, key)
             for idx, key in _chunk_plan(backend.shape, norm)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return Array(graph, name, norm, meta=_meta(backend.dtype, len(backend.shape)))


def _name(name_token: str, label: str) -> str:
    digest = hashlib.blake2b(name_token.encode(), digest_size=10).hexdigest()
    return f"ome-hcs-{label}-{digest}" if label else f"ome-hcs-{digest}"


def dask_array(backend: ZarrLevelArray, name_token: str, chunks: Any = None,
               label: str = "") -> Any:
    """A dask array over ``backend`` on the zarr chunks (or shards), named without hashing data.

    Parameters
    ----------
    backend
        The array to wrap.
    name_token
        Identifies the store, the node and the chunking; the dask name is
        ``"ome-hcs-<label>-<digest of token>"``, so equal inputs give equal names (dask can
        share work across opens) and different nodes never collide.
    chunks
        ``None`` or ``{}`` for the stored chunks; otherwise anything
        ``dask.array.normalize_chunks`` accepts.
    label
        Readable part of the name (the node path).
    """
    from dask.array.core import normalize_chunks

    shape = backend.shape
    if chunks is None or chunks == {}:
        norm = _stored_chunks(shape, backend.info.chunks)
    else:
        norm = normalize_chunks(chunks, shape=shape, dtype=backend.dtype)
    return _graph_array(backend, _name(name_token, label), norm)


def dask_chunked(backend: Any, name_token: str, chunks: Any, label: str = "") -> Any:
    """A one-layer dask array over any of our lazy arrays (``shape``, ``dtype``,
    ``read_inline``, ``_getitem``) in blocks of ``chunks``: edges per dimension, or
    anything ``dask.array.normalize_chunks`` accepts."""
    from dask.array.core import normalize_chunks

    shape = tuple(backend.shape)
    if isinstance(chunks, tuple) and all(isinstance(c, int) and c > 0 for c in chunks):
        norm = _stored_chunks(shape, chunks)
    else:
        norm = normalize_chunks(chunks, shape=shape, dtype=backend.dtype)
    return _graph_array(backend, _name(name_token + repr(norm), label), norm)


@lru_cache(maxsize=256)
def _stored_chunks(shape: tuple[int, ...], chunks: tuple[int, ...]
                   ) -> tuple[tuple[int, ...], ...]:
    from dask.array.core import normalize_chunks

    return normalize_chunks(chunks, shape=shape)


@lru_cache(maxsize=64)
def _meta(dtype: np.dtype, ndim: int) -> np.ndarray:
    return np.empty((0,) * ndim, dtype=dtype)
