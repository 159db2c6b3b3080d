"""Reading and writing chunks ourselves: in parallel, bounded, and never returning garbage.

zarr-python 3 routes every read through one event-loop thread; on a multi-core machine that
thread, not the disk or the decompressor, limits a plate-wide read (measured: two dask threads
reading 384 fields gained nothing over one). :class:`ArrayReader` reads the chunks of an
array whose codecs :mod:`._codecs` knows (zstd, blosc, gzip, zlib, lz4, bz2, lzma, crc32c;
sharded or not; v2 or v3) in the calling thread for local files (numcodecs releases the GIL,
so dask's threads run in parallel), or with concurrent store reads for any other store.

It is also where hostile chunks stop. A chunk is read only from a regular file, at most as
many bytes as the chunk can take (a FIFO, ``/dev/zero`` or a directory in its place is an
error, not a hang); decoding is bounded by the chunk's size (:class:`._codecs.Codec`); a
chunk that decodes to the wrong size, a damaged one, or an unreadable one is an
:class:`~xarray_hcs.errors.HcsReadError` naming it; and every element a read returns was
either decoded or is the fill value of an absent chunk: the output is checked to be covered.

``tests/test_chunks.py`` checks it against zarr itself over many shapes, dtypes and codecs.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ._codecs import MAX_CHUNK_BYTES, ChunkFormat, CodecError, encoded_limit
from .errors import HcsError, HcsReadError

__all__ = ["ArrayReader", "ChunkWriter", "file_stamp", "holds_only", "read_regular",
           "write_file"]

#: a chunk of strings (a table column) decodes to at most this many bytes
MAX_VLEN_BYTES = 2**28


# ----------------------------------------------------------------------------- local files


#: directories known to lie inside a store's root (after resolving links), per root
_INSIDE: dict[tuple[Any, ...], bool] = {}


def _inside(real: str, root: str) -> bool:
    # resolved each time (only when a directory is first seen): the root itself may have
    # become a link to elsewhere since (a plate replaced in place)
    real_root = os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _open_inside(path: str, root: str | None, where: str) -> int:
    """A file descriptor of ``path``, which must lie inside ``root`` once symbolic links are
    resolved: a plate from an untrusted archive could otherwise link a chunk or a table to
    any local file, which a reader would parse and a writer copy into the plate it writes.
    Links that stay inside the root are followed."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if root is None:
        return os.open(path, flags)
    # relative paths resolve against the working directory, which may change between reads
    root, path = os.path.abspath(root), os.path.abspath(path)
    parent = os.path.dirname(path)
    # keyed by the directory's identity too: a path checked once may later be another
    # directory (a plate deleted and unpacked anew, with a link where a folder was)
    st = os.stat(parent)
    key = (root, parent, *_stamp_of(st))  # an inode number alone is soon reused
    ok = _INSIDE.get(key)
    if ok is None:
        if len(_INSIDE) > 100_000:
            _INSIDE.clear()
        ok = _INSIDE[key] = _inside(os.path.realpath(parent), root)
    if not ok:
        raise HcsReadError(f"lies in {os.path.realpath(parent)!r}, outside the store's "
                           f"directory {root!r} (through '..' or a symbolic link; neither "
                           "is followed out of a store)", where)
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    real = os.path.realpath(path)  # a link in the file's own place
    if not _inside(real, root):
        raise HcsReadError(f"is a symbolic link to {real!r}, outside the store's directory "
                           f"{root!r}; links out of a store are not followed", where)
    return os.open(real, flags)


def read_regular(path: str, limit: int, where: str | None = None,
                 stamp: list[Any] | None = None, root: str | None = None) -> bytes | None:
    """The bytes of the regular file ``path`` (None if absent), at most ``limit`` of them.

    Only regular files are read: a directory, FIFO, socket or device (a link to
    ``/dev/zero``) in a file's place is an :class:`HcsReadError` (opened without blocking),
    as is a file larger than ``limit`` or one that cannot be read. ``stamp``, if given,
    receives the file's identity (:func:`file_stamp` of the file read). ``root``, if given,
    is the store's directory, which the file must lie in (see :func:`_open_inside`).
    """
    where = where or path
    try:
        fd = _open_inside(path, root, where)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except HcsError:
        raise
    except OSError as e:
        raise _os_error(e, where) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise HcsReadError(f"is {kind} (a file was expected)", where)
        if st.st_size > limit:
            raise HcsReadError(f"holds {st.st_size} bytes, more than the {limit} it can "
                               "hold", where)
        if stamp is not None:
            stamp.append(_stamp_of(st))
        # one byte more than its size: a file that grew while read shows it
        data = os.read(fd, st.st_size + 1)
        while len(data) <= st.st_size:  # short reads (network file systems)
            more = os.read(fd, st.st_size + 1 - len(data))
            if not more:
                break
            data += more
    except HcsError:
        raise
    except OSError as e:
        raise _os_error(e, where) from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while read
        raise HcsReadError(f"holds more than the {limit} bytes it can hold", where)
    return data


def _stamp_of(st: os.stat_result) -> tuple[int, ...]:
    # the inode alone may be reused at once by a file made after one deleted: its change
    # time (nanoseconds) tells them apart
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def file_stamp(path: str) -> tuple[int, ...] | None:
    """The identity of the file at ``path`` as :func:`read_regular` records it; None if
    there is none."""
    try:
        return _stamp_of(os.stat(path))
    except OSError:
        return None


def _read_range(path: str, start: int, length: int, where: str, root: str | None = None
                ) -> bytes | None:
    """``length`` bytes of the regular file ``path`` from ``start`` (negative: from its end);
    None if the file is absent; an error if it is shorter. ``root`` as for
    :func:`read_regular`."""
    try:
        fd = _open_inside(path, root, where)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except HcsError:
        raise
    except OSError as e:
        raise _os_error(e, where) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HcsReadError("is not a regular file (a shard file was expected)", where)
        pos = st.st_size + start if start < 0 else start
        if pos < 0 or pos + length > st.st_size:
            raise HcsReadError(f"is {st.st_size} bytes long; bytes {pos}..{pos + length} "
                               "were asked for", where)
        return os.pread(fd, length, pos)
    except HcsError:
        raise
    except OSError as e:
        raise _os_error(e, where) from None
    finally:
        os.close(fd)


def _os_error(e: OSError, where: str) -> HcsReadError:
    if isinstance(e, PermissionError):
        return HcsReadError(f"permission denied ({e.strerror})", where)
    return HcsReadError(f"cannot be read ({type(e).__name__}: {e.strerror or e})", where)


def write_file(path: str, data: Any) -> None:
    """Write ``data`` to the local file ``path`` atomically, making its directories.

    A temporary file, then a rename: readers never see a torn file, and a writer killed
    mid-way leaves at most a ``.partial`` file, which zarr ignores. The temporary name is
    unique per process and thread.
    """
    import threading

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.partial"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- selections


def _axis_plan(k: Any, n: int, c: int) -> tuple[list[tuple[int, Any, Any]], int | None]:
    """How one axis of an outer selection reads: [(chunk index, within the chunk, in the
    output)] and the output length (None: an integer, the axis is dropped)."""
    if isinstance(k, int | np.integer) and not isinstance(k, bool):
        i = int(k) + (n if k < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"index {int(k)} is out of bounds for an axis of {n}")
        return [(i // c, i % c, None)], None
    if isinstance(k, slice):
        a, b, step = k.indices(n)
        if step == 1:
            b = max(a, b)
            out = []
            for i in range(a // c, (b - 1) // c + 1 if b > a else a // c):
                lo, hi = max(a, i * c), min(b, (i + 1) * c)
                out.append((i, slice(lo - i * c, hi - i * c), slice(lo - a, hi - a)))
            return out, b - a
        idx = np.arange(a, b, step)
    else:
        idx = np.asarray(k)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise IndexError(f"cannot select with {k!r}")
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"an index of {k!r} is out of bounds for an axis of {n}")
    ids = idx // c
    out = [(int(u), idx[ids == u] - int(u) * c, np.flatnonzero(ids == u))
           for u in np.unique(ids)]
    return out, len(idx)


def _place(out: np.ndarray, dst: tuple[Any, ...], block: np.ndarray) -> None:
    if sum(isinstance(d, np.ndarray) for d in dst) > 1:  # outer placement
        grids = [np.arange(d.start, d.stop) if isinstance(d, slice) else d for d in dst]
        out[np.ix_(*grids)] = block
    else:
        out[dst] = block


def _take(chunk: np.ndarray, src: tuple[Any, ...]) -> np.ndarray:
    """Outer indexing of ``chunk``: integers and slices first (basic indexing keeps the axes
    in place), then the integer arrays, one axis at a time in effect."""
    basic = tuple(slice(None) if isinstance(s, np.ndarray) else s for s in src)
    sub = chunk[basic]
    rest = [s for s in src if not isinstance(s, int | np.integer)]
    arrays = [i for i, s in enumerate(rest) if isinstance(s, np.ndarray)]
    if not arrays:
        return sub
    if len(arrays) == 1:
        key = [slice(None)] * sub.ndim
        key[arrays[0]] = rest[arrays[0]]
        return sub[tuple(key)]
    grids = [rest[i] if isinstance(rest[i], np.ndarray) else np.arange(n)
             for i, n in enumerate(sub.shape)]
    return sub[np.ix_(*grids)]


# ----------------------------------------------------------------------------- the reader


class ArrayReader:
    """Reads outer selections (integers, slices, integer arrays) of one array from its chunks.

    ``local`` is the array's directory (reads in the calling thread: :meth:`read`);
    ``fetch`` an async function ``(key, limit, byte_range) -> bytes | None`` for any store
    (:meth:`aread`). ``where`` names the array in messages.
    """

    __slots__ = ("fmt", "local", "root", "fetch", "where", "stamp")

    def __init__(self, fmt: ChunkFormat, where: str, local: str | None = None,
                 fetch: Callable[..., Awaitable[bytes | None]] | None = None,
                 stamp: tuple[int, ...] | None = None, root: str | None = None) -> None:
        self.fmt = fmt
        self.local = local
        self.root = root  # the store's directory, which every chunk file must lie in
        self.fetch = fetch
        self.where = where
        self.stamp = stamp  # the array document's identity when it was read (local)

    # -- planning -------------------------------------------------------------------------

    def _plan(self, key: tuple[Any, ...]) -> tuple[tuple[int, ...], list[Any]]:
        fmt = self.fmt
        if len(key) != len(fmt.shape):
            raise IndexError(f"{len(key)} indices for an array of {len(fmt.shape)} dimensions")
        axes = [_axis_plan(k, n, c) for k, n, c in zip(key, fmt.shape, fmt.read_chunks,
                                                       strict=True)]
        out_shape = tuple(n for _, n in axes if n is not None)
        pieces = []
        for combo in itertools.product(*(a for a, _ in axes)):
            idx = tuple(p[0] for p in combo)
            src = tuple(p[1] for p in combo)
            dst = tuple(p[2] for p in combo if p[2] is not None)
            pieces.append((idx, src, dst))
        return out_shape, pieces

    def _assemble(self, out_shape: tuple[int, ...], pieces: list[Any],
                  chunks: list[np.ndarray | None]) -> np.ndarray:
        fmt = self.fmt
        out = np.empty(out_shape, dtype=fmt.native)
        filled = 0
        fill = fmt.fill_value()
        for (_, src, dst), chunk in zip(pieces, chunks, strict=True):
            size = 1
            for d, n in zip(dst, out_shape, strict=True):
                size *= len(range(*d.indices(n))) if isinstance(d, slice) else len(d)
            filled += size
            if chunk is None:  # absent: the fill value, as zarr reads it
                _place(out, dst, np.asarray(fill, dtype=out.dtype) if fill is not None
                       else np.asarray(None, dtype=object))
            else:
                _place(out, dst, _take(chunk, src))
        if filled != out.size:  # never hand out memory that nothing was written to
            raise HcsReadError(f"a read covered {filled} of {out.size} elements",
                               self.where)
        return out

    # -- decoding -------------------------------------------------------------------------

    def _decode(self, raw: bytes, codecs: tuple[Any, ...], dtype: np.dtype, shape:
                tuple[int, ...], key: str) -> np.ndarray:
        fmt = self.fmt
        where = f"{self.where}/{key}"
        nbytes = 0 if fmt.vlen is not None else int(np.prod(shape)) * dtype.itemsize
        try:
            data: Any = raw
            steps = list(reversed(codecs))
            for i, codec in enumerate(steps):
                last = i == len(steps) - 1
                if fmt.vlen is not None:
                    limit = min(MAX_VLEN_BYTES, max(2**24, 1000 * len(raw)))
                else:
                    limit = nbytes if last else encoded_limit(nbytes)
                data = codec.decode(data, limit)
            if fmt.vlen is not None:
                values = np.asarray(fmt.vlen.impl.decode(data), dtype=object)
                if values.size != int(np.prod(shape)):
                    raise CodecError(f"holds {values.size} strings, not {int(np.prod(shape))}")
                return values.reshape(shape, order=fmt.order)
            if len(data) != nbytes:
                raise CodecError(f"decodes to {len(data)} bytes, not the {nbytes} of a "
                                 "chunk")
            return np.frombuffer(data, dtype=dtype).reshape(shape, order=fmt.order)
        except CodecError as e:
            raise HcsReadError(f"is damaged: it {e}", where) from None
        except HcsError:
            raise
        except Exception as e:  # noqa: BLE001  numcodecs raises many kinds on bad data
            raise HcsReadError(f"is damaged: it cannot be decoded ({type(e).__name__}: "
                               f"{e})", where) from None

    def _chunk_limit(self) -> int:
        fmt = self.fmt
        return (MAX_VLEN_BYTES if fmt.vlen is not None else
                encoded_limit(int(np.prod(fmt.chunks)) * fmt.dtype.itemsize))

    # -- unsharded ------------------------------------------------------------------------

    def read(self, key: tuple[Any, ...]) -> np.ndarray:
        """``key`` of a local array, read in this thread."""
        assert self.local is not None
        out_shape, pieces = self._plan(key)
        try:
            chunks = self._local_chunks(pieces)
        except HcsReadError:
            self._still_the_same(True)  # chunks of another array are not "damaged" ones
            raise
        self._still_the_same(any(c is None for c in chunks))
        return self._assemble(out_shape, pieces, chunks)

    def _local_chunks(self, pieces: list[Any]) -> list[np.ndarray | None]:
        assert self.local is not None
        fmt = self.fmt
        if fmt.shard is not None:
            return self._sharded_local(pieces)
        decoded: dict[tuple[int, ...], np.ndarray | None] = {}
        for idx, _, _ in pieces:
            if idx not in decoded:
                name = fmt.key(idx)
                raw = read_regular(os.path.join(self.local, name), self._chunk_limit(),
                                   f"{self.where}/{name}", root=self.root)
                decoded[idx] = None if raw is None else self._decode(
                    raw, fmt.codecs, fmt.dtype, fmt.chunks, name)
        return [decoded[i] for i, _, _ in pieces]

    def _still_the_same(self, absent: bool) -> None:
        """After a read: the array is still the one whose document was read. A removed array
        (a remover deletes the documents first) would read its deleted chunks as fill values;
        one removed and made anew at the same path (another image) would be read with the
        old one's dtype, coordinates and channel names. Both are errors, not values."""
        assert self.local is not None
        from .errors import HcsNotFoundError

        doc = os.path.join(self.local, "zarr.json" if self.fmt.zarr_format == 3 else ".zarray")
        if self.stamp is None:
            if absent and not os.path.exists(doc):
                raise HcsNotFoundError("was removed while it was read", self.where)
            return
        now = file_stamp(doc)
        if now is None:
            raise HcsNotFoundError("was removed since the plate was opened", self.where)
        if now != self.stamp:
            raise HcsNotFoundError("was replaced since the plate was opened (another array "
                                   "at its path): open the plate again", self.where)

    async def aread(self, key: tuple[Any, ...]) -> np.ndarray:
        """``key`` read through ``fetch`` (any store), the chunks concurrently."""
        assert self.fetch is not None
        fmt = self.fmt
        out_shape, pieces = self._plan(key)
        if fmt.shard is not None:
            return self._assemble(out_shape, pieces, await self._sharded_remote(pieces))
        wanted = list(dict.fromkeys(i for i, _, _ in pieces))
        limit = self._chunk_limit()
        raws = await asyncio.gather(*(self.fetch(fmt.key(i), limit, None) for i in wanted))
        decoded = {i: None if raw is None else self._decode(raw, fmt.codecs, fmt.dtype,
                                                            fmt.chunks, fmt.key(i))
                   for i, raw in zip(wanted, raws, strict=True)}
        return self._assemble(out_shape, pieces, [decoded[i] for i, _, _ in pieces])

    # -- sharded --------------------------------------------------------------------------

    def _shard_of(self, idx: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """(the shard holding inner chunk ``idx``, the chunk's place in the shard's index)."""
        shard = self.fmt.shard
        assert shard is not None
        per = [s // c for s, c in zip(self.fmt.chunks, shard.chunks, strict=True)]
        outer = tuple(i // p for i, p in zip(idx, per, strict=True))
        inner = tuple(i % p for i, p in zip(idx, per, strict=True))
        return outer, int(np.ravel_multi_index(inner, per)) if per else 0

    def _index_bytes(self) -> int:
        shard = self.fmt.shard
        assert shard is not None
        n = int(np.prod([s // c for s, c in zip(self.fmt.chunks, shard.chunks, strict=True)]))
        return 16 * n + (4 if shard.index_crc else 0)

    def _parse_index(self, raw: bytes | None, name: str) -> np.ndarray | None:
        shard = self.fmt.shard
        assert shard is not None
        if raw is None:
            return None
        where = f"{self.where}/{name}"
        if shard.index_crc:
            from ._codecs import _cached_codec

            try:
                raw = _cached_codec("crc32c", "{}").decode(raw, len(raw))
            except Exception as e:  # noqa: BLE001
                raise HcsReadError(f"has a damaged shard index ({e})", where) from None
        index = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        limit = encoded_limit(int(np.prod(shard.chunks)) * self.fmt.dtype.itemsize)
        empty = index == np.iinfo(np.uint64).max
        if np.any(empty[:, 0] != empty[:, 1]):  # the empty marker is both values, or none
            raise HcsReadError("has a damaged shard index (an entry half marked empty)", where)
        held = ~empty[:, 0]
        if np.any(index[held, 1] > limit):
            raise HcsReadError("has a shard index naming a chunk larger than a chunk can be",
                               where)
        return index

    def _inner(self, index: np.ndarray | None, pos: int) -> tuple[int, int] | None:
        if index is None or index[pos, 0] == np.iinfo(np.uint64).max:
            return None
        return int(index[pos, 0]), int(index[pos, 1])

    def _decode_inner(self, raw: bytes, name: str) -> np.ndarray:
        shard = self.fmt.shard
        assert shard is not None
        dtype = self.fmt.dtype.newbyteorder(shard.endian) if self.fmt.dtype.itemsize > 1 \
            else self.fmt.dtype
        return self._decode(raw, shard.codecs, dtype, shard.chunks, name)

    def _sharded_local(self, pieces: list[Any]) -> list[np.ndarray | None]:
        assert self.local is not None and self.fmt.shard is not None
        indexes: dict[tuple[int, ...], np.ndarray | None] = {}
        decoded: dict[tuple[int, ...], np.ndarray | None] = {}
        n = self._index_bytes()
        for idx, _, _ in pieces:
            if idx in decoded:
                continue
            outer, pos = self._shard_of(idx)
            name = self.fmt.key(outer)
            path = os.path.join(self.local, name)
            if outer not in indexes:
                at = -n if self.fmt.shard.index_at_end else 0
                indexes[outer] = self._parse_index(_read_range(
                    path, at, n, f"{self.where}/{name}", self.root), name)
            span = self._inner(indexes[outer], pos)
            raw = None if span is None else _read_range(path, span[0], span[1],
                                                        f"{self.where}/{name}", self.root)
            decoded[idx] = None if raw is None else self._decode_inner(raw, name)
        return [decoded[i] for i, _, _ in pieces]

    async def _sharded_remote(self, pieces: list[Any]) -> list[np.ndarray | None]:
        assert self.fetch is not None and self.fmt.shard is not None
        from zarr.abc.store import RangeByteRequest, SuffixByteRequest

        n = self._index_bytes()
        wanted = list(dict.fromkeys(i for i, _, _ in pieces))
        where = {i: self._shard_of(i) for i in wanted}
        shards = list(dict.fromkeys(o for o, _ in where.values()))
        at_end = self.fmt.shard.index_at_end
        raws = await asyncio.gather(*(self.fetch(
            self.fmt.key(o), n, SuffixByteRequest(n) if at_end else RangeByteRequest(0, n))
            for o in shards))
        indexes = {o: self._parse_index(r, self.fmt.key(o)) for o, r in
                   zip(shards, raws, strict=True)}
        spans = {i: self._inner(indexes[where[i][0]], where[i][1]) for i in wanted}
        got = await asyncio.gather(*(
            self.fetch(self.fmt.key(where[i][0]), spans[i][1],
                       RangeByteRequest(spans[i][0], spans[i][0] + spans[i][1]))
            if spans[i] is not None else _none() for i in wanted))
        decoded = {i: None if raw is None else self._decode_inner(raw,
                                                                  self.fmt.key(where[i][0]))
                   for i, raw in zip(wanted, got, strict=True)}
        return [decoded[i] for i, _, _ in pieces]


async def _none() -> None:
    return None


# ----------------------------------------------------------------------------- writing


def holds_only(block: np.ndarray, fill: Any) -> bool:
    """True if every element of ``block`` is ``fill`` (NaN matches NaN): a chunk zarr need
    not store, since a missing chunk reads as the fill value."""
    f = np.asarray(fill)
    if f.dtype.kind in "fc" and bool(np.isnan(f)):
        return bool(np.isnan(block).all())
    return not np.any(block != fill)


class ChunkWriter:
    """Writes chunk-aligned blocks of one array straight to chunk files, as zarr would.

    For the arrays we create ourselves (unsharded, one compressor): each chunk is encoded in
    the calling thread (numcodecs releases the GIL) and written atomically (temporary file +
    rename). Chunks that hold only the fill value are not written, as zarr does by default;
    edge chunks are padded with it. Used as a ``dask.array.store`` target.
    """

    __slots__ = ("fmt", "root", "shape", "dtype", "ndim")

    def __init__(self, fmt: ChunkFormat, root: str) -> None:
        self.fmt = fmt
        self.root = root
        self.shape = fmt.shape
        self.dtype = fmt.native
        self.ndim = len(fmt.shape)

    @classmethod
    def for_array(cls, directory: str, doc: dict[str, Any], zarr_format: int
                  ) -> ChunkWriter | None:
        from ._codecs import chunk_format

        fmt = chunk_format(doc, zarr_format, directory)
        if fmt is None or fmt.shard is not None or fmt.vlen is not None or fmt.fill is None:
            return None
        return cls(fmt, directory)

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        fmt = self.fmt
        value = np.asarray(value)
        starts = [k.indices(n)[0] if isinstance(k, slice) else int(k)
                  for k, n in zip(key, self.shape, strict=True)]
        if any(a % c for a, c in zip(starts, fmt.chunks, strict=True)):
            raise ValueError(f"block {key} is not aligned with the chunks {fmt.chunks}")
        ranges = [range(a // c, (a + n + c - 1) // c)
                  for a, n, c in zip(starts, value.shape, fmt.chunks, strict=True)]
        for idx in itertools.product(*ranges):
            src = tuple(slice(i * c - a, min((i + 1) * c - a, n))
                        for i, a, c, n in zip(idx, starts, fmt.chunks, value.shape,
                                              strict=True))
            block = value[src]
            if block.shape != fmt.chunks:  # an edge chunk: zarr stores it full size
                full = np.full(fmt.chunks, fmt.fill, dtype=block.dtype)
                full[tuple(slice(0, s) for s in block.shape)] = block
                block = full
            path = os.path.join(self.root, fmt.key(idx))
            if holds_only(block, fmt.fill):
                if os.path.exists(path):
                    os.remove(path)
                continue
            data: Any = np.asarray(block, dtype=fmt.dtype).tobytes(order=fmt.order)
            for codec in fmt.codecs:
                data = codec.encode(data)
            write_file(path, data)


# fail loudly, once, if a limit is changed to one the decoders cannot honour
assert MAX_VLEN_BYTES <= MAX_CHUNK_BYTES
