"""AnnData measurement tables encoded straight to zarr documents and chunks.

``AnnData.write_zarr`` costs ~50 ms a table (thousands of trips through zarr's event loop
for a dozen tiny arrays): 20 s for the tables of a 384-field plate. A measurement table is
a simple AnnData: a dense ``X``, an ``obs`` dataframe of integer and categorical string
columns with a string index, a ``var`` index naming the columns of ``X``, and empty
``obsm``, ``varm``, ``obsp``, ``varp``, ``layers`` and ``uns``. This module writes exactly
that, in AnnData's on-disk element encodings (``anndata`` 0.1.0, ``dataframe``, ``array``,
``string-array``, ``categorical`` 0.2.0, ``dict`` 0.1.0) with zarr's default codecs, and
returns None for anything else, which the caller then lets AnnData write.

``tests/test_tables.py`` reads what this writes with AnnData itself and compares it with
what AnnData writes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from .store import group_documents

__all__ = ["anndata_documents", "node_name_ok"]

#: rows per chunk are chosen so that a chunk holds about this many bytes (before compression)
_CHUNK_BYTES = 4 * 2**20
#: the bytes a string is assumed to take, for the chunking of string arrays
_STRING_BYTES = 32

_DICT = {"encoding-type": "dict", "encoding-version": "0.1.0"}
_ARRAY = {"encoding-type": "array", "encoding-version": "0.2.0"}
_STRINGS = {"encoding-type": "string-array", "encoding-version": "0.2.0"}


def anndata_documents(x: np.ndarray, var_names: list[str], obs: pd.DataFrame,
                      attrs: dict[str, Any], zarr_format: int) -> dict[str, bytes] | None:
    """The files (relative to the table group) of the AnnData ``X``, ``obs``, ``var``.

    ``obs`` holds integer columns and categoricals of strings, under a string index;
    ``x`` is 2-D, float or bool. ``attrs`` join AnnData's own on the root group. None when
    the table holds anything else (the caller writes it with AnnData).
    """
    if x.ndim != 2 or x.dtype.kind not in "fb" or len(var_names) != x.shape[1]:
        return None
    index = obs.index
    if not all(isinstance(v, str) for v in index):
        return None
    index_key = "_index" if index.name is None else index.name
    names = [index_key, *obs.columns]
    if not all(node_name_ok(c) for c in names) or len(set(names)) < len(names):
        return None
    w = _Writer(zarr_format)
    w.group("", {"encoding-type": "anndata", "encoding-version": "0.1.0", **attrs})
    w.array("X", x, _ARRAY)
    w.group("obs", {"_index": index_key, "column-order": list(obs.columns),
                    "encoding-type": "dataframe", "encoding-version": "0.2.0"})
    w.strings(f"obs/{index_key}", np.asarray(index, dtype=object))
    for name in obs.columns:
        col = obs[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            cats = col.cat.categories
            if not all(isinstance(c, str) for c in cats):
                return None
            w.group(f"obs/{name}", {"ordered": bool(col.cat.ordered),
                                    "encoding-type": "categorical",
                                    "encoding-version": "0.2.0"})
            w.array(f"obs/{name}/codes", np.asarray(col.cat.codes), _ARRAY)
            w.strings(f"obs/{name}/categories", np.asarray(cats, dtype=object))
        elif isinstance(col.dtype, np.dtype) and col.dtype.kind in "iu":
            w.array(f"obs/{name}", col.to_numpy(), _ARRAY)
        else:  # nullable integers, floats, bools...: AnnData's own encodings
            return None
    w.group("var", {"_index": "_index", "column-order": [], "encoding-type": "dataframe",
                    "encoding-version": "0.2.0"})
    w.strings("var/_index", np.asarray(var_names, dtype=object))
    for name in ("layers", "obsm", "obsp", "uns", "varm", "varp"):
        w.group(name, _DICT)
    return w.docs


def node_name_ok(name: Any) -> bool:
    """Whether ``name`` can name a zarr node (an ``obs`` column, the index): a non-empty
    string, one path segment, not ``.`` or ``..``, not zarr v3's reserved ``__`` prefix."""
    return (isinstance(name, str) and bool(name) and "/" not in name
            and name not in (".", "..") and not name.startswith("__"))


class _Writer:
    """Collects the documents and chunks of a zarr hierarchy in memory."""

    def __init__(self, zarr_format: int) -> None:
        import numcodecs

        self.v2 = zarr_format == 2
        self.docs: dict[str, bytes] = {}
        # zarr's defaults for new arrays: zstd (level 0) in v3, blosc lz4 in v2
        self.compressor = (numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
                           if self.v2 else numcodecs.Zstd(level=0))

    def _put(self, path: str, name: str, doc: dict[str, Any]) -> None:
        key = f"{path}/{name}" if path else name
        self.docs[key] = json.dumps(doc, indent=2).encode()

    def group(self, path: str, attrs: dict[str, Any]) -> None:
        # as every table group is written (its attributes may hold NaN, as zarr allows)
        self.docs.update(group_documents(path, attrs, 2 if self.v2 else 3, allow_nan=True))

    def array(self, path: str, values: np.ndarray, attrs: dict[str, Any]) -> None:
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        fill: Any = False if values.dtype.kind == "b" else (
            0.0 if values.dtype.kind == "f" else 0)
        row_bytes = max(1, values.dtype.itemsize * int(np.prod(values.shape[1:])))
        self._array(path, values, attrs, fill, row_bytes, strings=False)

    def strings(self, path: str, values: np.ndarray) -> None:
        self._array(path, values, _STRINGS, "", _STRING_BYTES, strings=True)

    def _array(self, path: str, values: np.ndarray, attrs: dict[str, Any], fill: Any,
               row_bytes: int, strings: bool) -> None:
        from numcodecs import VLenUTF8

        shape = values.shape
        rows = max(1, min(shape[0], _CHUNK_BYTES // row_bytes)) if shape else 1
        chunks = (rows, *(max(1, n) for n in shape[1:])) if shape else ()
        if self.v2:
            self._put(path, ".zarray", {
                "shape": list(shape), "chunks": list(chunks),
                "dtype": "|O" if strings else values.dtype.str, "fill_value": fill,
                "order": "C", "filters": [{"id": "vlen-utf8"}] if strings else None,
                "dimension_separator": ".", "compressor": self.compressor.get_config(),
                "zarr_format": 2})
            self._put(path, ".zattrs", attrs)
        else:
            bytes_codec: dict[str, Any] = {"name": "bytes"}
            if not strings and values.dtype.itemsize > 1:
                bytes_codec["configuration"] = {"endian": "little"}
            self._put(path, "zarr.json", {
                "shape": list(shape), "data_type": "string" if strings else values.dtype.name,
                "chunk_grid": {"name": "regular",
                               "configuration": {"chunk_shape": list(chunks)}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": fill,
                "codecs": [{"name": "vlen-utf8", "configuration": {}} if strings
                           else bytes_codec,
                           {"name": "zstd", "configuration": {"level": 0, "checksum": False}}],
                "attributes": attrs, "zarr_format": 3, "node_type": "array",
                "storage_transformers": []})
        if any(n == 0 for n in shape):
            return  # an empty array has no chunks
        sep = "." if self.v2 else "/"
        prefix = "" if self.v2 else "c/"
        trailing = sep.join("0" for _ in shape[1:])
        for i, start in enumerate(range(0, shape[0], rows)):
            block = values[start:start + rows]
            if block.shape[0] < rows:  # zarr stores edge chunks full size, padded with fill
                pad = np.full((rows, *shape[1:]), fill, dtype=values.dtype)
                pad[:block.shape[0]] = block
                block = pad
            raw = (VLenUTF8().encode(block) if strings
                   else np.ascontiguousarray(block).tobytes())
            key = f"{prefix}{i}{sep + trailing if trailing else ''}"
            self.docs[f"{path}/{key}"] = bytes(self.compressor.encode(raw))
