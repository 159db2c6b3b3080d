"""Whole reads of small zarr arrays (table columns) without zarr's per-array machinery.

An AnnData table is a dozen tiny arrays; through zarr each costs ~0.5 ms of codec-pipeline
and event-loop overhead, which is most of the time of concatenating a plate's tables. Here
the chunks are fetched with the plate store's own reads and decoded with numcodecs, for the
encodings tables use: zarr v2 (compressor, ``vlen-utf8`` filter) and v3 (``bytes`` or
``vlen-utf8`` + zstd / gzip / blosc / crc32c). Anything else (sharding, transposes, other
codecs) returns None and the caller lets zarr read it.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from ._chunks import _codec

if TYPE_CHECKING:
    from .store import ArrayInfo, PlateStore

__all__ = ["read_small_array"]

_V3_BYTES_CODECS = {"zstd", "gzip", "blosc", "crc32c"}


def _plan(info: ArrayInfo) -> tuple[list[Any], str, np.dtype, Any, Any] | None:
    """(decoders in decoding order, chunk-key template, dtype, fill, final) or None."""
    doc = info.doc
    if info.zarr_format == 2:
        dtype_s = doc.get("dtype")
        if doc.get("order", "C") != "C":
            return None
        decoders = []
        comp = doc.get("compressor")
        if comp is not None:
            c = _codec(comp)
            if c is None:
                return None
            decoders.append(c)
        final = None
        for f in reversed(doc.get("filters") or []):
            if f.get("id") == "vlen-utf8":
                final = _codec(f)
            else:
                return None
        dtype = np.dtype(object) if final is not None else np.dtype(dtype_s)
        sep = doc.get("dimension_separator") or "."
        return decoders, sep, dtype, doc.get("fill_value"), final
    if doc.get("storage_transformers"):
        return None
    decoders, final, endian = [], None, "<"
    for c in doc.get("codecs", []):
        name, conf = c.get("name"), c.get("configuration", {}) or {}
        if name == "bytes":
            endian = {"little": "<", "big": ">"}.get(conf.get("endian", "little"), "<")
        elif name in ("vlen-utf8", "vlen-bytes"):
            final = _codec({"id": name})
        elif name in _V3_BYTES_CODECS:
            cfg = {"id": name, **conf} if name != "blosc" else {"id": "blosc"}
            if name == "zstd":
                cfg = {"id": "zstd", "level": conf.get("level", 0)}
            codec = _codec(cfg)
            if codec is None:
                return None
            decoders.append(codec)
        else:
            return None
    if final is None:
        try:
            dtype = np.dtype(doc["data_type"])
        except TypeError:
            return None
        if dtype.itemsize > 1:
            dtype = dtype.newbyteorder(endian)
    else:
        dtype = np.dtype(object)
    kenc = doc.get("chunk_key_encoding", {"name": "default"})
    if kenc.get("name", "default") == "default":
        sep = "c" + (kenc.get("configuration", {}) or {}).get("separator", "/")
    else:
        sep = (kenc.get("configuration", {}) or {}).get("separator", ".")
    return decoders[::-1], sep, dtype, doc.get("fill_value"), final


def _key(sep: str, idx: tuple[int, ...]) -> str:
    if sep.startswith("c"):  # v3 default: "c/0/1"
        return "/".join(["c", *map(str, idx)]) if sep[1:] == "/" else ".".join(
            ["c", *map(str, idx)])
    return sep.join(map(str, idx)) if idx else "0"


async def read_small_array(ps: PlateStore, info: ArrayInfo) -> np.ndarray | None:
    """The whole array at ``info`` (read with ``ps``), or None if it needs zarr."""
    plan = _plan(info)
    if plan is None:
        return None
    decoders, sep, dtype, fill, final = plan
    shape, chunks = info.shape, info.chunks
    grid = [range((n + c - 1) // c) if n else range(0) for n, c in zip(shape, chunks,
                                                                         strict=True)]
    idxs = list(itertools.product(*grid))
    if len(idxs) > 64:  # not a table column: leave large arrays to zarr
        return None
    from .store import join_path

    raws = await ps.gather(*(ps._get(join_path(info.path, _key(sep, i))) for i in idxs))
    out = np.empty(shape, dtype=dtype.newbyteorder("=") if dtype.kind != "O" else dtype)
    if any(r is None for r in raws):
        if dtype.kind == "O" or fill is None:
            return None  # absent chunks of strings: zarr knows the fill semantics
        out[...] = fill
    for idx, raw in zip(idxs, raws, strict=True):
        if raw is None:
            continue
        data: Any = raw
        for d in decoders:
            data = d.decode(data)
        if final is not None:
            block = np.asarray(final.decode(data), dtype=object).reshape(chunks)
        else:
            block = np.frombuffer(data, dtype=dtype).reshape(chunks)
        dst = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, shape,
                                                                          strict=True))
        out[dst] = block[tuple(slice(0, s.stop - s.start) for s in dst)]
    return out
