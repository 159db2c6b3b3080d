"""Open a plate: store → metadata walk → nodes → DataTree (or a dict of Datasets).

The orchestration shared by the xarray backend (``engine="ome-hcs"``) and
:func:`open_plate`, which skips xarray's generic per-node post-processing and hands out dask
arrays on the zarr chunks directly.
"""

from __future__ import annotations

from typing import Any

import xarray as xr

from ._xarray_internals import assemble_tree
from .store import PlateStore, open_store
from .tree import OpenOptions, build_nodes, gc_paused, read_plate

__all__ = ["open_plate", "plate_tree", "plate_groups"]


def _nodes(obj: Any, opts: OpenOptions, storage_options: dict[str, Any] | None,
           consolidated: bool | None) -> tuple[PlateStore, dict[str, Any]]:
    if consolidated is not None and not isinstance(consolidated, bool):
        from .errors import HcsTypeError

        raise HcsTypeError(f"consolidated must be True, False or None, got {consolidated!r}")
    if storage_options is not None and not isinstance(storage_options, dict):
        from .errors import HcsTypeError

        raise HcsTypeError(f"storage_options must be a dict, got {storage_options!r}")
    ps = open_store(obj, storage_options=storage_options, consolidated=consolidated)
    with gc_paused():
        rec = read_plate(ps, opts)
        return ps, build_nodes(ps, rec, opts)


def plate_tree(obj: Any, opts: OpenOptions, storage_options: dict[str, Any] | None = None,
               consolidated: bool | None = None) -> xr.DataTree:
    """The selected plate as a DataTree (see :func:`open_plate` for the parameters)."""
    ps, nodes = _nodes(obj, opts, storage_options, consolidated)
    with gc_paused():
        tree = assemble_tree(nodes)
    close = getattr(ps.store, "close", None)
    if close is not None and type(ps.store).__name__ == "ZipStore":
        tree.set_close(close)
    return tree


def plate_groups(obj: Any, opts: OpenOptions, storage_options: dict[str, Any] | None = None,
                 consolidated: bool | None = None) -> dict[str, xr.Dataset]:
    """``{"/path": Dataset}`` for every node of the selected plate, parents before children."""
    _, nodes = _nodes(obj, opts, storage_options, consolidated)
    out: dict[str, xr.Dataset] = {}
    for path in sorted(nodes, key=lambda p: (p.count("/") + (p != ""), p)):
        out["/" + path] = nodes[path].dataset()
    return out


def open_plate(
    store: Any,
    *,
    acquisition: int | str | None = None,
    wells: Any = None,
    fields: Any = None,
    levels: Any = None,
    labels: bool | list[str] = True,
    tables: bool = True,
    chunks: Any = {},  # noqa: B006 - never mutated; {} means "the stored chunks"
    storage_options: dict[str, Any] | None = None,
    consolidated: bool | None = None,
    validate: bool = False,
    on_missing: str = "raise",
) -> xr.DataTree:
    """Open an OME-Zarr HCS plate as a lazy DataTree with dask arrays on the zarr chunks.

    The same tree as ``xr.open_datatree(store, engine="ome-hcs", chunks={})``, built without
    xarray's generic per-node post-processing (which costs seconds on large plates).

    Parameters
    ----------
    store
        Local path, URL (``http(s)://``, ``s3://``, ... via fsspec), ``.ozx``/``.zip`` file,
        zarr ``Store`` or zarr ``Group``.
    acquisition
        Keep only the fields of this acquisition (id or name).
    wells
        Wells to read: ``"B/03"``, ``"B03"``, ``"B3"`` or ``("B", "03")``; default all.
    fields
        Field (image) paths to read in each well, e.g. ``["0", "1"]``; ints are paths too.
    levels
        Resolution levels to read: indices (``0``, ``-1``) or dataset paths (``"s0"``). A
        label image with as many levels as its field keeps the same ones (else all).
    labels
        Read label images: True (all), False, or a list of label names.
    tables
        List the tables of the fields and of the plate (their group documents are read; the
        rows are read when asked for, with ``dt.hcs.table`` / ``concat_tables``).
    chunks
        ``{}`` (default) dask arrays on the stored chunks (shards for sharded arrays);
        ``None`` lazily indexed arrays without dask; or dask chunks.
    storage_options
        fsspec options for URLs.
    consolidated
        Use consolidated metadata: None when present, True require, False ignore.
    validate
        Also check the stricter rules of the spec (see :mod:`xarray_hcs.ngff.validate`).
    on_missing
        ``"raise"`` (default) or ``"warn"`` to skip wells, fields, labels and tables that
        the metadata lists but the store lacks.

    Returns
    -------
    xarray.DataTree
        plate → row → well → field → level, as in the store.
    """
    opts = OpenOptions(acquisition=acquisition, wells=wells, fields=fields, levels=levels,
                       labels=labels, chunks=chunks, validate=validate,
                       on_missing=on_missing, tables=tables)  # type: ignore[arg-type]
    return plate_tree(store, opts, storage_options, consolidated)
