"""Zarr array documents → how to find, fetch and decode a chunk: the one codec-chain parser.

Every part of xarray_hcs that touches chunks (the direct reader of image levels, the reader of
small table arrays, the chunk writer) asks this module, so a zarr document is understood one
way everywhere. It is also where hostile documents stop: :func:`check_array_document` checks
every value an array document holds (shape, chunks, shards, dtype, fill value, codecs, chunk
key encoding) before anything uses it, and :class:`Codec` decodes with a bound: a chunk that
claims or inflates to more than the chunk can hold is refused before it is decompressed, so
a 100 KB "decompression bomb" costs 100 KB.

Limits (documented in docs/open.md): a chunk decodes to at most ``MAX_CHUNK_BYTES``; an array
holds at most ``MAX_ARRAY_BYTES`` in at most ``MAX_CHUNKS`` chunks (or shards) and
``MAX_DIMS`` dimensions.
"""

from __future__ import annotations

import bz2
import functools
import lzma
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import HcsMetadataError

__all__ = ["ChunkFormat", "Codec", "CodecError", "MAX_ARRAY_BYTES", "MAX_CHUNKS",
           "MAX_CHUNK_BYTES", "MAX_DIMS",
           "MAX_DOCUMENT_BYTES", "ShardFormat", "chunk_format", "encoded_limit",
           "parse_fill_value", "v2_dtype", "v3_dtype"]

#: at most this many dimensions in an array
MAX_DIMS = 32
#: at most this many chunks (or shards) in one array: a dask graph of its reads must fit
MAX_CHUNKS = 2**22
#: a chunk decodes to at most this many bytes (zarr v2 and blosc have the same limit)
MAX_CHUNK_BYTES = 2**31 - 1
#: an array holds at most this many bytes (a terabyte: a long time-lapse of a large field)
MAX_ARRAY_BYTES = 2**40
#: a metadata document is at most this large
MAX_DOCUMENT_BYTES = 64 * 2**20

_SEPARATORS = (".", "/")
_SPECIAL_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class CodecError(ValueError):
    """A chunk's bytes do not decode to what the array says it holds."""


# ----------------------------------------------------------------------------- fill values


def parse_fill_value(value: Any, dtype: np.dtype, zarr_format: int) -> Any:
    """The fill value of a zarr document as a numpy scalar of ``dtype``.

    ``None`` when the document states none (v2 ``null``) or one of a kind not read here
    (strings, structured types); raises ``ValueError`` when the value cannot be one of
    ``dtype`` (a fraction for an integer type, a number out of range, text for a number):
    such an array would read as garbage wherever a chunk is missing.
    """
    if value is None or dtype.kind not in "biufc":
        return None
    native = dtype.newbyteorder("=")
    if isinstance(value, str):
        if value in _SPECIAL_FLOATS and dtype.kind in "fc":
            return native.type(_SPECIAL_FLOATS[value])
        if zarr_format == 3 and value.startswith("0x") and dtype.kind == "f":
            # the value's bit pattern, big-endian (zarr v3 spec, floating-point fill values)
            try:
                bits = int(value, 16).to_bytes(dtype.itemsize, "big")
            except (ValueError, OverflowError):
                raise ValueError(f"fill value {value!r} is not a {dtype} bit pattern") from None
            return np.frombuffer(bits, dtype=native.newbyteorder(">"))[0].astype(native)
        raise ValueError(f"fill value {value!r} is not a {dtype} number")
    if isinstance(value, list) and dtype.kind == "c" and len(value) == 2:
        parts = [parse_fill_value(v, np.dtype(f"f{dtype.itemsize // 2}"), zarr_format)
                 for v in value]
        return native.type(complex(float(parts[0]), float(parts[1])))
    if isinstance(value, bool):
        if dtype.kind != "b" and zarr_format == 3:
            raise ValueError(f"fill value {value!r} is not a {dtype} number")
        return native.type(value)
    if not isinstance(value, int | float):
        raise ValueError(f"fill value {value!r} is not a {dtype} number")
    if dtype.kind in "iub":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"fill value {value!r} is not an integer ({dtype})")
        info = np.iinfo(native) if dtype.kind != "b" else None
        if info is not None and not info.min <= int(value) <= info.max:
            raise ValueError(f"fill value {value!r} is out of range for {dtype}")
        return native.type(int(value))
    with np.errstate(over="ignore"):
        out = native.type(value)
    if np.isinf(out) and not np.isinf(value):
        raise ValueError(f"fill value {value!r} is out of range for {dtype}")
    return out


# ----------------------------------------------------------------------------- dtypes


def v2_dtype(d: Any, where: str) -> np.dtype:
    """The dtype of a v2 document's ``dtype`` (a string, or a structured list)."""
    try:
        return np.dtype([tuple(x) for x in d] if isinstance(d, list) else d)
    except (TypeError, ValueError) as e:
        raise HcsMetadataError(f"dtype {d!r} is not a zarr v2 dtype ({e})", where) from None


def v3_dtype(d: Any, where: str, doc: dict[str, Any] | None = None) -> np.dtype:
    """The dtype of a v3 document's ``data_type``; zarr itself decides extension types."""
    if d == "string":  # variable-length strings (table columns): Python objects in numpy
        return np.dtype(object)
    if isinstance(d, str):
        try:
            return np.dtype(d)
        except TypeError:
            pass
    from zarr.core.metadata.v3 import ArrayV3Metadata

    try:
        if doc is not None:  # the array's own document: its codecs suit its data type
            return ArrayV3Metadata.from_dict(dict(doc)).dtype.to_native_dtype()
        return ArrayV3Metadata.from_dict(
            {"zarr_format": 3, "node_type": "array", "shape": [1], "data_type": d,
             "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
             "chunk_key_encoding": {"name": "default"}, "fill_value": None,
             "codecs": [{"name": "bytes"}]}).dtype.to_native_dtype()
    except Exception as e:  # noqa: BLE001  zarr raises many kinds here
        raise HcsMetadataError(f"unsupported zarr data type {d!r} ({e})", where) from None


# ----------------------------------------------------------------------------- codecs


def encoded_limit(nbytes: int) -> int:
    """The most bytes a stored chunk of ``nbytes`` decoded bytes may take: what any of the
    codecs read here can make of incompressible data, with room to spare."""
    return nbytes + nbytes // 8 + 2**16


def _zstd_content_size(data: bytes) -> int | None:
    """The decoded size a zstd frame declares in its header; None if it declares none (or
    is not one frame we can read the header of)."""
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        return None
    fhd = data[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if size == 0 or len(data) < pos + size:
        return None
    value = int.from_bytes(data[pos:pos + size], "little")
    return value + 256 if size == 2 else value


@dataclass(frozen=True, slots=True)
class Codec:
    """One bytes → bytes step of a chunk's codec chain, decoded with a bound."""

    name: str
    impl: Any  # the numcodecs codec

    def encode(self, data: Any) -> bytes:
        return bytes(self.impl.encode(data))

    def decode(self, data: bytes, limit: int) -> bytes:
        """``data`` decoded, at most ``limit`` bytes of it (else :class:`CodecError`, before
        anything larger is allocated)."""
        name = self.name
        if name == "crc32c":
            if len(data) < 4:
                raise CodecError("is shorter than its crc32c checksum")
            return bytes(self.impl.decode(data))
        if name == "zstd":
            declared = _zstd_content_size(data)
            if declared is not None:
                if declared > limit:
                    raise CodecError(f"declares {declared} decoded bytes, more than the "
                                     f"{limit} the chunk can hold")
                return bytes(self.impl.decode(data))
            return self._into(data, limit)
        if name == "blosc":
            from numcodecs.blosc import _cbuffer_sizes

            if len(data) < 16:
                raise CodecError("is too short for a blosc header")
            declared, stored, _ = _cbuffer_sizes(data)
            if stored != len(data):
                # blosc reads as many bytes as its header says: a truncated chunk would be
                # read past its end (memory that is not the chunk's)
                raise CodecError(f"holds {len(data)} bytes where its blosc header says "
                                 f"{stored}")
            if declared > limit:
                raise CodecError(f"declares {declared} decoded bytes, more than the {limit} "
                                 "the chunk can hold")
            return bytes(self.impl.decode(data))
        if name == "lz4":
            if len(data) < 4:
                raise CodecError("is too short for an lz4 header")
            declared = struct.unpack("<I", data[:4])[0]
            if declared > limit:
                raise CodecError(f"declares {declared} decoded bytes, more than the {limit} "
                                 "the chunk can hold")
            return bytes(self.impl.decode(data))
        if name in ("gzip", "zlib"):
            # wbits 47: zlib or gzip headers alike (numcodecs writes either for either name)
            return _stream(zlib.decompressobj(47), data, limit, name)
        if name == "bz2":
            return _stream(bz2.BZ2Decompressor(), data, limit, name)
        if name == "lzma":
            return _stream(lzma.LZMADecompressor(), data, limit, name)
        raise CodecError(f"cannot decode {name!r} with a bound")  # pragma: no cover

    def _into(self, data: bytes, limit: int) -> bytes:
        """A zstd frame that declares no size: decoded into a buffer of ``limit`` bytes, then
        again into one a byte smaller, which must not be enough: the size is then exact."""
        out = np.empty(limit, dtype=np.uint8)
        try:
            self.impl.decode(data, out=out)
        except RuntimeError as e:
            raise CodecError(f"does not fit the {limit} bytes the chunk can hold ({e})") from None
        if limit:
            try:
                self.impl.decode(data, out=np.empty(limit - 1, dtype=np.uint8))
            except RuntimeError:
                return out.tobytes()
        raise CodecError("a zstd frame without a declared size decodes to fewer bytes than "
                         "the chunk holds")


def _stream(decomp: Any, data: bytes, limit: int, name: str) -> bytes:
    try:
        out = decomp.decompress(data, limit + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as e:
        raise CodecError(f"is not valid {name} data ({e})") from None
    if len(out) > limit:
        raise CodecError(f"inflates to more than the {limit} bytes the chunk can hold")
    if not getattr(decomp, "eof", True):
        raise CodecError(f"is truncated {name} data")
    return out


#: compressors decoded with a bound, by their v2 ``id`` / v3 ``name``
_BOUNDED = ("zstd", "blosc", "gzip", "zlib", "lz4", "bz2", "lzma")


def _codec(name: str, config: dict[str, Any], where: str) -> Codec:
    import json

    try:
        key = _config_key(config)
        hit = _CODECS.get(key)
        if hit is None:
            hit = _CODECS[key] = _cached_codec(name, json.dumps(config, sort_keys=True))
        return hit
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise HcsMetadataError(f"codec {name!r} has a bad configuration {config!r} ({e})",
                               where) from None


#: codecs by configuration: a plate repeats a handful of them over thousands of arrays
_CODECS: dict[Any, Codec] = {}


def _config_key(config: dict[str, Any]) -> Any:
    """A cheap hashable key of a small codec configuration (plain JSON values)."""
    return tuple(sorted((k, v if not isinstance(v, list | dict) else repr(v))
                        for k, v in config.items()))


@functools.lru_cache(maxsize=256)
def _cached_codec(name: str, key: str) -> Codec:
    """The codec of a configuration, made once: plates repeat a handful of them."""
    import json

    import numcodecs

    cfg = {k: v for k, v in json.loads(key).items() if k != "id"}
    if name == "blosc":
        cfg = {k: v for k, v in cfg.items() if k in ("cname", "clevel", "shuffle",
                                                     "blocksize")}
        if isinstance(cfg.get("shuffle"), str):  # v3 spells the shuffle out
            cfg["shuffle"] = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}.get(
                cfg["shuffle"], -1)
    elif name == "zstd":
        cfg = {"level": cfg.get("level", 0), "checksum": bool(cfg.get("checksum", False))}
    return Codec(name, numcodecs.get_codec({"id": name, **cfg}))


# ----------------------------------------------------------------------------- documents


def _ints(value: Any, what: str, where: str, *, positive: bool) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise HcsMetadataError(f"{what} must be a list of integers, got {value!r}", where)
    if len(value) > MAX_DIMS:
        raise HcsMetadataError(f"{what} has {len(value)} dimensions (at most {MAX_DIMS})",
                               where)
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise HcsMetadataError(f"{what} must hold integers, got {v!r}", where)
        if v < (1 if positive else 0) or v > 2**53:
            raise HcsMetadataError(f"{what} holds {v}: each must be "
                                   f"{'at least 1' if positive else 'at least 0'}", where)
        out.append(v)
    return tuple(out)


def _obj(value: Any, what: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HcsMetadataError(f"{what} must be an object, got {value!r}", where)
    return value


def _grid_count(shape: tuple[int, ...], chunks: tuple[int, ...]) -> int:
    return math.prod(-(-n // c) for n, c in zip(shape, chunks, strict=True))


def _check_grid(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int, what: str,
                where: str) -> None:
    if len(chunks) != len(shape):
        raise HcsMetadataError(f"{what} {list(chunks)} does not match the array's shape "
                               f"{list(shape)}", where)
    size = math.prod(shape) * max(itemsize, 1)
    if size > MAX_ARRAY_BYTES:
        raise HcsMetadataError(f"shape {list(shape)} of {itemsize}-byte items is {size} bytes, "
                               f"more than the {MAX_ARRAY_BYTES} an array may hold", where)
    n = _grid_count(shape, chunks)
    if n > MAX_CHUNKS:
        raise HcsMetadataError(f"shape {list(shape)} in {what} {list(chunks)} makes {n} "
                               f"chunks, more than the {MAX_CHUNKS} an array may have", where)
    if math.prod(chunks) * max(itemsize, 1) > MAX_CHUNK_BYTES:
        raise HcsMetadataError(f"{what} {list(chunks)} of {itemsize}-byte items is larger "
                               f"than {MAX_CHUNK_BYTES} bytes", where)


@dataclass(frozen=True, slots=True)
class ShardFormat:
    """The inside of a v3 shard: inner chunks, their codecs, the index's place and codecs."""

    chunks: tuple[int, ...]
    codecs: tuple[Codec, ...]
    endian: str
    index_crc: bool
    index_at_end: bool

    @property
    def per_shard(self) -> tuple[int, ...]:
        return self.chunks


@dataclass(frozen=True, slots=True)
class ChunkFormat:
    """How the chunks of one array are named, stored and decoded."""

    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]  # the grid of stored objects: shards, for sharded arrays
    dtype: np.dtype  # as stored in a chunk (byte order included); object for strings
    order: str  # "C" or "F"
    codecs: tuple[Codec, ...]  # bytes → bytes, in encoding order
    vlen: Codec | None  # strings: their array → bytes codec
    fill: Any  # numpy scalar, or None (v2 null: zeros)
    separator: str
    prefix: str  # "c" for v3's default keys, else ""
    shard: ShardFormat | None = None

    def key(self, idx: tuple[int, ...]) -> str:
        """The store key (relative to the array) of the stored object at grid index ``idx``."""
        if self.prefix:
            return self.separator.join([self.prefix, *map(str, idx)])
        return self.separator.join(map(str, idx)) if idx else "0"

    @property
    def read_chunks(self) -> tuple[int, ...]:
        """The unit of decoding: inner chunks of a shard, else the chunks."""
        return self.shard.chunks if self.shard is not None else self.chunks

    @property
    def nbytes(self) -> int:
        """Decoded bytes of one (inner) chunk; 0 for strings (no fixed size)."""
        return 0 if self.vlen is not None else math.prod(self.read_chunks) * self.dtype.itemsize

    @property
    def native(self) -> np.dtype:
        """The dtype values are read as: the stored one in this machine's byte order."""
        return self.dtype if self.dtype.kind == "O" else self.dtype.newbyteorder("=")

    def fill_value(self) -> Any:
        """What an absent chunk reads as (zeros where the document states no fill value)."""
        if self.fill is not None:
            return self.fill
        return None if self.vlen is not None else np.zeros((), self.native)[()]


def _v2(doc: dict[str, Any], where: str) -> ChunkFormat | None:
    shape = _ints(doc.get("shape"), "shape", where, positive=False)
    chunks = _ints(doc.get("chunks"), "chunks", where, positive=True)
    dtype = v2_dtype(doc.get("dtype"), where)
    _check_grid(shape, chunks, dtype.itemsize, "chunks", where)
    order = doc.get("order", "C")
    if order not in ("C", "F"):
        raise HcsMetadataError(f"order must be 'C' or 'F', got {order!r}", where)
    sep = doc.get("dimension_separator", ".")
    sep = "." if sep is None else sep
    if sep not in _SEPARATORS:
        raise HcsMetadataError(f"dimension_separator must be '.' or '/', got {sep!r}", where)
    comp = doc.get("compressor")
    filters = doc.get("filters")
    if filters is not None and not isinstance(filters, list | tuple):
        raise HcsMetadataError(f"filters must be a list or null, got {filters!r}", where)
    for f in filters or []:
        if not isinstance(f, dict) or not isinstance(f.get("id"), str):
            raise HcsMetadataError(f"a filter must be an object with an 'id', got {f!r}", where)
    if comp is not None and (not isinstance(comp, dict) or not isinstance(comp.get("id"), str)):
        raise HcsMetadataError(f"compressor must be an object with an 'id' or null, got "
                               f"{comp!r}", where)
    try:
        fill = parse_fill_value(doc.get("fill_value"), dtype, 2)
    except ValueError as e:
        raise HcsMetadataError(str(e), where) from None
    vlen = None
    if filters:
        if len(filters) == 1 and filters[0]["id"] in ("vlen-utf8", "vlen-bytes") \
                and dtype.kind == "O":
            vlen = _vlen(filters[0]["id"])
            fill = _string_fill(doc.get("fill_value"))
        else:
            return None  # other filters: zarr decodes them
    if dtype.hasobject and vlen is None:
        return None
    codecs = ()
    if comp is not None:
        if comp["id"] not in _BOUNDED or (comp["id"] == "lzma" and comp.get("format") == 3):
            return None  # raw lzma streams need their filters: zarr decodes them
        codecs = (_codec(comp["id"], comp, where),)
    return ChunkFormat(2, shape, chunks, dtype, order, codecs, vlen, fill, sep, "")


def _string_fill(value: Any) -> Any:
    return value if isinstance(value, str | bytes) else ""


def _vlen(name: str) -> Codec:
    import numcodecs

    return Codec(name, numcodecs.get_codec({"id": name}))


def _v3(doc: dict[str, Any], where: str) -> ChunkFormat | None:
    shape = _ints(doc.get("shape"), "shape", where, positive=False)
    grid = _obj(doc.get("chunk_grid"), "chunk_grid", where)
    if grid.get("name") != "regular":
        raise HcsMetadataError(f"unsupported chunk grid {grid.get('name')!r}", where)
    conf = _obj(grid.get("configuration"), "chunk_grid configuration", where)
    chunks = _ints(conf.get("chunk_shape"), "chunk_shape", where, positive=True)
    dtype = v3_dtype(doc.get("data_type"), where, doc)
    _check_grid(shape, chunks, dtype.itemsize, "chunk_shape", where)
    names = doc.get("dimension_names")
    if names is not None and (not isinstance(names, list | tuple) or len(names) != len(shape)
                              or any(n is not None and not isinstance(n, str) for n in names)):
        raise HcsMetadataError(f"dimension_names must be a list of {len(shape)} names, got "
                               f"{names!r}", where)
    if doc.get("storage_transformers"):
        raise HcsMetadataError("storage transformers are not supported", where)
    kenc = doc.get("chunk_key_encoding", {"name": "default"})
    kenc = _obj(kenc, "chunk_key_encoding", where)
    kname = kenc.get("name")
    if kname not in ("default", "v2"):
        raise HcsMetadataError(f"unknown chunk key encoding {kname!r}", where)
    kconf = _obj(kenc.get("configuration", {}) or {}, "chunk_key_encoding configuration",
                 where)
    sep = kconf.get("separator", "/" if kname == "default" else ".")
    if sep not in _SEPARATORS:
        raise HcsMetadataError(f"chunk key separator must be '.' or '/', got {sep!r}", where)
    codecs = doc.get("codecs")
    if not isinstance(codecs, list | tuple) or not codecs:
        raise HcsMetadataError(f"codecs must be a non-empty list, got {codecs!r}", where)
    try:
        fill = parse_fill_value(doc.get("fill_value"), dtype, 3)
    except ValueError as e:
        raise HcsMetadataError(str(e), where) from None
    chain = _v3_chain(codecs, dtype, chunks, where)
    if chain is None:
        return None
    endian, vlen, bb, shard = chain
    if vlen is not None:
        fill = _string_fill(doc.get("fill_value"))
    stored = dtype.newbyteorder(endian) if dtype.itemsize > 1 and vlen is None else dtype
    return ChunkFormat(3, shape, chunks, stored, "C", bb, vlen, fill, sep,
                       "c" if kname == "default" else "", shard)


def _v3_chain(codecs: Any, dtype: np.dtype, chunks: tuple[int, ...], where: str
              ) -> tuple[str, Codec | None, tuple[Codec, ...], ShardFormat | None] | None:
    """(byte order, strings codec, bytes codecs, shard) of a v3 codec list; None where a
    codec is one zarr must apply (transpose, unknown ones)."""
    endian, vlen, shard = "<", None, None
    bb: list[Codec] = []
    array_to_bytes = 0
    for c in codecs:
        c = _obj(c, "a codec", where)
        name = c.get("name")
        if not isinstance(name, str):
            raise HcsMetadataError(f"a codec has no name: {c!r}", where)
        conf = _obj(c.get("configuration", {}) or {}, f"configuration of codec {name!r}",
                    where)
        if name == "bytes":
            array_to_bytes += 1
            e = conf.get("endian", "little")
            if e not in ("little", "big") and not (e is None and dtype.itemsize == 1):
                raise HcsMetadataError(f"bytes codec endian must be 'little' or 'big', got "
                                       f"{e!r}", where)
            endian = ">" if e == "big" else "<"
        elif name in ("vlen-utf8", "vlen-bytes"):
            array_to_bytes += 1
            vlen = _vlen(name)
        elif name == "sharding_indexed":
            array_to_bytes += 1
            shard = _shard(conf, dtype, chunks, where)
            if shard is None:
                return None
        elif name in _BOUNDED or name == "crc32c":
            if array_to_bytes != 1:
                raise HcsMetadataError(f"codec {name!r} comes before the array→bytes codec",
                                       where)
            bb.append(_codec(name, conf, where))
        else:
            return None  # transpose and codecs we do not read: zarr applies them
    if array_to_bytes != 1:
        raise HcsMetadataError(f"codecs must hold one array→bytes codec, got {codecs!r}",
                               where)
    if sum(c.name != "crc32c" for c in bb) > 1:
        return None  # two compressors in a row: no exact size to bound the first by
    return endian, vlen, tuple(bb), shard


def _shard(conf: dict[str, Any], dtype: np.dtype, shard_shape: tuple[int, ...], where: str
           ) -> ShardFormat | None:
    inner = _ints(conf.get("chunk_shape"), "sharding chunk_shape", where, positive=True)
    if len(inner) != len(shard_shape) or any(s % c for s, c in zip(shard_shape, inner,
                                                                  strict=True)):
        raise HcsMetadataError(f"sharding chunk_shape {list(inner)} does not divide the shard "
                               f"shape {list(shard_shape)}", where)
    if math.prod(inner) * dtype.itemsize > MAX_CHUNK_BYTES:
        raise HcsMetadataError(f"sharding chunk_shape {list(inner)} is too large", where)
    if _grid_count(shard_shape, inner) > MAX_CHUNKS:
        raise HcsMetadataError("a shard holds too many chunks", where)
    codecs = conf.get("codecs")
    index_codecs = conf.get("index_codecs", [{"name": "bytes"}])
    if not isinstance(codecs, list | tuple) or not isinstance(index_codecs, list | tuple):
        raise HcsMetadataError("sharding codecs and index_codecs must be lists", where)
    chain = _v3_chain(codecs, dtype, inner, where)
    if chain is None or chain[1] is not None or chain[3] is not None:
        return None  # nested shards and strings in shards: zarr reads them
    names = [(_obj(c, "an index codec", where)).get("name") for c in index_codecs]
    if names not in (["bytes"], ["bytes", "crc32c"]):
        return None
    endian = (index_codecs[0].get("configuration") or {}).get("endian", "little")
    if endian != "little":
        return None
    location = conf.get("index_location", "end")
    if location not in ("start", "end"):
        raise HcsMetadataError(f"sharding index_location must be 'start' or 'end', got "
                               f"{location!r}", where)
    return ShardFormat(inner, chain[2], chain[0], names == ["bytes", "crc32c"],
                       location == "end")


def chunk_format(doc: Any, zarr_format: int, where: str) -> ChunkFormat | None:
    """The :class:`ChunkFormat` of an array document, checked; None if its codecs are ones
    only zarr applies (the document is still checked as far as it is read here)."""
    if not isinstance(doc, dict):
        raise HcsMetadataError("array metadata must be a JSON object", where)
    try:
        fmt = _v3(doc, where) if zarr_format == 3 else _v2(doc, where)
    except HcsMetadataError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise HcsMetadataError(f"malformed zarr v{zarr_format} array metadata ({e!r})",
                               where) from None
    if fmt is None:
        _zarr_accepts(doc, zarr_format, where)
    return fmt


def _zarr_accepts(doc: dict[str, Any], zarr_format: int, where: str) -> None:
    """A document whose codecs only zarr applies is parsed by zarr itself, now: unknown codec
    names and bad configurations fail when the plate is opened, as an HcsMetadataError,
    rather than at the first read from deep inside zarr."""
    try:
        if zarr_format == 3:
            from zarr.core.metadata.v3 import ArrayV3Metadata

            meta: Any = ArrayV3Metadata.from_dict(dict(doc))
        else:
            from zarr.core.metadata.v2 import ArrayV2Metadata

            meta = ArrayV2Metadata.from_dict({k: v for k, v in doc.items()
                                              if k != "attributes"})
        from zarr.core.array import AsyncArray
        from zarr.storage import MemoryStore, StorePath

        AsyncArray(meta, StorePath(MemoryStore()))  # builds the codec pipeline
    except Exception as e:  # noqa: BLE001  zarr raises many kinds on bad documents
        raise HcsMetadataError(f"zarr cannot read this array ({type(e).__name__}: {e})",
                               where) from None
