"""Lazy arrays over zarr: an xarray ``BackendArray`` and cheap, path-named dask arrays.

The zarr array object is created on first access from the metadata document read while
opening, so opening a plate costs no per-array store read and no per-array zarr parsing, and
the wrapper pickles small (store + path + document) for ``dask.distributed`` workers, which
re-create the zarr array on their side.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np
import zarr
from xarray.backends import BackendArray
from xarray.core import indexing

from .store import ArrayInfo, PlateStore

__all__ = ["ZarrLevelArray", "dask_array"]


class ZarrLevelArray(BackendArray):
    """One level (or label level) array of a plate, read through zarr on demand."""

    __slots__ = ("_array", "_lock", "info", "plate_store", "shape", "dtype")

    def __init__(self, plate_store: PlateStore, info: ArrayInfo) -> None:
        self.plate_store = plate_store
        self.info = info
        self.shape = info.shape
        self.dtype = info.dtype
        self._array: zarr.Array | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"plate_store": self.plate_store, "info": self.info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["plate_store"], state["info"])  # type: ignore[misc]

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

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        arr = self.array
        if any(not isinstance(k, slice | int | np.integer) for k in key):
            return np.asarray(arr.oindex[key])
        return np.asarray(arr[key])

    # dask calls this with plain slices: skip xarray's indexer machinery on the hot path
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self.array[...])
        return out if dtype is None else out.astype(dtype)


class _DaskSource:
    """What dask's ``from_array`` slices: plain tuples of slices straight into zarr."""

    __slots__ = ("backend", "shape", "dtype", "ndim")

    def __init__(self, backend: ZarrLevelArray) -> None:
        self.backend = backend
        self.shape = backend.shape
        self.dtype = backend.dtype
        self.ndim = len(backend.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.backend.array[key])


def dask_array(backend: ZarrLevelArray, name_token: str, chunks: Any = None) -> Any:
    """A dask array over ``backend`` on the zarr chunks (or shards), named without hashing data.

    Parameters
    ----------
    backend
        The array to wrap.
    name_token
        Identifies the store and node (the store's source and the array path); the dask name
        is ``"ome-hcs-<digest>"`` of it, so equal inputs give equal names (dask can share work
        across opens) and different nodes never collide.
    chunks
        ``None`` or ``{}`` for the stored chunks; anything ``dask.array.from_array`` accepts,
        or a dict by dimension index.
    """
    import dask.array as da

    digest = hashlib.blake2b(name_token.encode(), digest_size=12).hexdigest()
    c = backend.info.chunks if chunks in (None, {}) else chunks
    return da.from_array(_DaskSource(backend), chunks=c, name=f"ome-hcs-{digest}",
                         asarray=False, fancy=False, meta=np.empty((0,) * len(backend.shape),
                                                                   dtype=backend.dtype))
