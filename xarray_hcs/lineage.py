"""What a lazy tree still reads from: every store behind its arrays and tables.

A write that replaces a store (``to_zarr(mode="w")``) must not clear the store it is about to
copy from; a tree derived lazily from a plate (``ds * 1``, ``astype``, a stacked view, a
``map_over_datasets``) still reads every pixel from it. This module walks whatever a variable
holds, xarray's lazy wrappers, our own arrays and the whole dask graph, and names the stores
it finds, so the writer can refuse instead of clearing its own source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["stores_read_by"]

#: at most this many objects are looked at for one write (a plate's graph is far smaller)
_MAX_OBJECTS = 20_000_000


def _children(obj: Any) -> Iterable[Any]:
    """The objects ``obj`` reads from (or holds), as far as they may lead to a store."""
    from dask._task_spec import Alias, DataNode, Task

    from .arrays import ZarrLevelArray, _DaskSource
    from .stack import StackedLevelArray, VariableSource

    if isinstance(obj, ZarrLevelArray):
        return (obj.plate_store,)
    if isinstance(obj, _DaskSource):
        return (obj.backend,)
    if isinstance(obj, StackedLevelArray):
        return obj.sources
    if isinstance(obj, VariableSource):
        return (obj.variable,)
    if hasattr(obj, "_data") and hasattr(obj, "dims") and hasattr(obj, "encoding"):
        return (obj._data,)  # an xarray Variable
    if hasattr(obj, "dask") and hasattr(obj, "chunks"):  # a dask array: every task of it
        return (v for layer in obj.dask.layers.values() for v in dict(layer).values())
    if isinstance(obj, Task):
        return (*obj.args, *obj.kwargs.values(), obj.func)
    if isinstance(obj, DataNode):
        return (obj.value,)
    if isinstance(obj, Alias):
        return ()
    if isinstance(obj, tuple | list | set | frozenset):
        return obj
    if isinstance(obj, dict):
        return obj.values()
    if isinstance(obj, np.ndarray) or isinstance(obj, str | bytes | int | float | bool):
        return ()
    if type(obj).__module__.startswith("zarr"):  # zarr's arrays know their store
        path = getattr(obj, "store_path", None) or getattr(getattr(obj, "_async_array", None),
                                                           "store_path", None)
        return (path.store,) if path is not None else ()
    inner = getattr(obj, "array", None)  # xarray's lazy wrappers (and ours) wrap .array
    return (inner,) if inner is not None else ()


def _walk(roots: Iterable[Any]) -> Iterator[Any]:
    from zarr.abc.store import Store

    from .store import PlateStore
    from .tables import TableSource

    seen: set[int] = set()
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        if len(seen) > _MAX_OBJECTS:
            raise RuntimeError("the tree's graph is too large to look through")
        if isinstance(obj, PlateStore | Store):
            yield obj
            continue
        if isinstance(obj, TableSource):
            yield obj.ps
            continue
        todo.extend(_children(obj))


def stores_read_by(objects: Iterable[Any]) -> list[Any]:
    """Every store (:class:`~xarray_hcs.store.PlateStore` or zarr ``Store``) that
    ``objects`` (variables, arrays, table sources, dask graphs) read from."""
    found: dict[int, Any] = {}
    for store in _walk(objects):
        found.setdefault(id(store), store)
    return list(found.values())
