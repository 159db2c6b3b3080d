"""Store access: open any store, URL or ``.ozx`` file, and read metadata documents concurrently.

Everything above this module asks for *nodes* (a group's attributes, an array's metadata) by
store path; this module turns those requests into as few store reads as possible: one read per
document, issued concurrently on zarr's event loop, or none at all when consolidated metadata
is present. Directory listing is never used: HTTP stores cannot list.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ._chunks import read_regular
from ._codecs import MAX_DOCUMENT_BYTES, parse_fill_value
from .errors import (
    HcsError,
    HcsMetadataError,
    HcsNotAPlateError,
    HcsNotFoundError,
    HcsReadError,
)

__all__ = ["ArrayInfo", "PlateStore", "group_documents", "in_turn", "join_path", "open_store",
           "read_error", "run_sync"]

T = TypeVar("T")

#: at most this many store reads in flight at once (HTTP servers and file handles are finite)
MAX_CONCURRENT_READS = 64


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine on zarr's own event loop thread (safe inside Jupyter's running loop)."""
    return sync(coro)


def join_path(*parts: str) -> str:
    return "/".join(p for p in parts if p)


async def in_turn(*aws: Any) -> list[Any]:
    """``asyncio.gather`` for awaitables that never wait: run them one after the other."""
    out: list[Any] = []
    try:
        for a in aws:
            out.append(await a)
    except BaseException:
        for a in aws[len(out) + 1:]:  # never started: close them quietly
            a.close()
        raise
    return out


def group_documents(path: str, attrs: dict[str, Any], zarr_format: int,
                    allow_nan: bool = True) -> dict[str, bytes]:
    """The documents of a zarr group at ``path`` with ``attrs`` (keys are store paths).

    NaN and ±Infinity in attributes are written as zarr-python writes them (``NaN``), so a
    plate that was read can be written back; ``allow_nan=False`` refuses them.
    """
    pre = f"{path}/" if path else ""
    if zarr_format == 3:
        doc = {"zarr_format": 3, "node_type": "group", "attributes": attrs}
        return {f"{pre}zarr.json": json.dumps(doc, indent=2, allow_nan=allow_nan).encode()}
    return {f"{pre}.zgroup": b'{\n  "zarr_format": 2\n}',
            f"{pre}.zattrs": json.dumps(attrs, indent=2, allow_nan=allow_nan).encode()}


@dataclass(frozen=True, slots=True, eq=False)
class ArrayInfo:
    """What the tree needs of an array without opening it: shape, dtype and chunking.

    ``doc`` is the array's full zarr metadata document (v3 ``zarr.json``; v2 ``.zarray`` with
    the ``.zattrs`` under ``"attributes"``), kept so that the zarr array can be created later,
    in this process or a dask worker, without reading the store again.
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    zarr_format: int
    doc: dict[str, Any]
    dimension_names: tuple[str | None, ...] | None = None
    #: the fill value as a numpy scalar of ``dtype`` (missing chunks read as it); None if
    #: the document states none or one of a kind not parsed here (strings)
    fill_value: Any = None
    #: how its chunks are named and decoded (:mod:`._codecs`); None: only zarr can
    format: Any = None
    #: the identity of its document when read (local plates): a read checks it is unchanged
    stamp: Any = None

    @property
    def read_chunks(self) -> tuple[int, ...]:
        """The chunks a write should use: the inner chunks of a sharded array."""
        return self.format.read_chunks if self.format is not None else self.chunks


def _a(node_type: Any) -> str:
    """'an array', 'a group', or what the document says instead."""
    if node_type in ("array", "group"):
        return ("an " if node_type == "array" else "a ") + node_type
    return f"node_type {node_type!r}"


def _parse_array_doc(doc: Any, zarr_format: int, path: str, where: str) -> ArrayInfo:
    """``path`` is the array's key in the store, ``where`` how messages name it. Every value
    of the document is checked here (:func:`._codecs.chunk_format`), once, when it is read."""
    from ._codecs import chunk_format, v2_dtype, v3_dtype

    if not isinstance(doc, dict):
        raise HcsMetadataError("array metadata must be a JSON object", where)
    if zarr_format == 3 and doc.get("node_type") != "array":
        found = doc.get("node_type")
        hint = (": a store written by xarray's own DataTree.to_zarr looks like this (each "
                "level a group holding its arrays), and is no OME-Zarr plate; "
                "dt.hcs.to_zarr(...) writes plates" if found == "group" else "")
        raise HcsMetadataError(f"expected an array, found {_a(found)}{hint}", where)
    fmt = chunk_format(doc, zarr_format, where)
    if fmt is not None:
        shape, chunks, dtype, fill = fmt.shape, fmt.chunks, fmt.native, fmt.fill
    else:  # codecs only zarr applies: the document's numbers were still checked
        shape = tuple(doc["shape"])
        if zarr_format == 3:
            chunks = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
            dtype = v3_dtype(doc["data_type"], where, doc)
        else:
            chunks = tuple(doc["chunks"])
            dtype = v2_dtype(doc["dtype"], where)
        dtype = dtype if dtype.kind == "O" else dtype.newbyteorder("=")
        try:
            fill = parse_fill_value(doc.get("fill_value"), dtype, zarr_format)
        except ValueError as e:
            raise HcsMetadataError(str(e), where) from None
    if zarr_format == 3:
        names = doc.get("dimension_names")
        dims = tuple(names) if isinstance(names, list) else None
    else:
        attrs = doc.get("attributes")
        arr_dims = attrs.get("_ARRAY_DIMENSIONS") if isinstance(attrs, dict) else None
        dims = tuple(arr_dims) if isinstance(arr_dims, list) else None
    return ArrayInfo(path, shape, dtype, chunks, zarr_format, doc, dims, fill, fmt)


class PlateStore:
    """A read-only view of a zarr store that holds (or may hold) an OME-Zarr plate.

    Parameters
    ----------
    store
        The zarr store.
    root
        The plate's path inside the store ("" for the store root).
    zarr_format
        2 or 3.
    source
        A human-readable name of the store, used in messages and ``encoding["source"]``.
    consolidated
        ``"<path>\\0<document>"`` → document from consolidated metadata, if the store has it:
        then it is the whole truth and nothing more is read.
    preloaded
        Documents already read (the root's, while probing), same keys.
    """

    def __init__(self, store: Store, root: str, zarr_format: int, source: str,
                 consolidated: dict[str, Any] | None = None,
                 preloaded: dict[str, Any] | None = None) -> None:
        self.store = store
        self.root = root.strip("/")
        self.zarr_format = zarr_format
        self.source = source
        self.consolidated = consolidated
        self.preloaded = preloaded or {}
        self._semaphore: asyncio.Semaphore | None = None
        # local files: a plain read is ~10x cheaper than a trip through a thread pool, and
        # metadata documents are small, so read them inline on the event loop
        from zarr.storage import LocalStore

        self._local_root = (os.path.abspath(str(store.root)) if isinstance(store, LocalStore)
                            else None)

    def where(self, path: str) -> str:
        """A path inside the plate as users should see it in messages: store + path."""
        return f"{self.source.rstrip('/')}/{path}" if path else self.source

    @property
    def local_root(self) -> str | None:
        """The directory of a local store (chunks can be read as files), else None."""
        return self._local_root

    @property
    def reads_inline(self) -> bool:
        """True if reads complete without waiting (local files): no point overlapping them."""
        return self._local_root is not None

    async def gather(self, *aws: Any) -> list[Any]:
        """Await reads of this store: concurrently, or in turn where they complete inline
        (local files: tasks would cost more than the reads)."""
        if self.reads_inline:
            return await in_turn(*aws)
        return list(await asyncio.gather(*aws))

    def __getstate__(self) -> dict[str, Any]:
        # what a dask worker needs to read arrays: no locks, no consolidated index
        return {"store": self.store, "root": self.root, "zarr_format": self.zarr_format,
                "source": self.source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<PlateStore {self.source!r} zarr v{self.zarr_format}>"

    # -- raw documents ------------------------------------------------------------------

    def _rel(self, key: str) -> str:
        return key[len(self.root) + 1:] if self.root and key.startswith(self.root) else key

    async def read_bytes(self, key: str, limit: int, byte_range: Any = None) -> bytes | None:
        """The bytes at ``key`` (a store key), None if absent; at most ``limit`` of them.

        Bounded everywhere: local files are read only if regular (never a FIFO or a device)
        and no larger than ``limit``; zip members are checked against their declared size
        before they are inflated; other stores are asked for at most ``limit + 1`` bytes.
        Any failure is an :class:`HcsReadError` naming the key.
        """
        where = self.where(self._rel(key))
        if self._local_root is not None:
            path = os.path.join(self._local_root, key)
            if byte_range is None:
                return read_regular(path, limit, where, root=self._local_root)
            from ._chunks import _read_range

            start = -byte_range.suffix if hasattr(byte_range, "suffix") else byte_range.start
            length = byte_range.suffix if hasattr(byte_range, "suffix") else (
                byte_range.end - byte_range.start)
            return _read_range(path, start, length, where, self._local_root)
        if byte_range is None:
            zf = getattr(self.store, "_zf", None)  # a zip: members say their size
            if zf is not None:
                try:
                    size = zf.getinfo(key).file_size
                except KeyError:
                    return None
                if size > limit:
                    raise HcsReadError(f"holds {size} bytes, more than the {limit} it can "
                                       "hold", where)
            else:
                from zarr.abc.store import RangeByteRequest

                byte_range = RangeByteRequest(0, limit + 1)
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_READS)
        async with self._semaphore:
            try:
                buf = await self.store.get(key, prototype=default_buffer_prototype(),
                                           byte_range=byte_range)
            except FileNotFoundError:
                return None
            except Exception as e:  # noqa: BLE001  stores raise their own kinds: name the key
                raise read_error(e, where) from e
        if buf is None:
            return None
        data = buf.to_bytes()
        if len(data) > limit:
            raise HcsReadError(f"holds more than the {limit} bytes it can hold", where)
        return data

    async def _get(self, key: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        return await self.read_bytes(key, limit)

    async def _get_json(self, key: str, stamp: list[Any] | None = None) -> Any | None:
        if stamp is not None and self._local_root is not None:
            raw = read_regular(os.path.join(self._local_root, key), MAX_DOCUMENT_BYTES,
                               self.where(self._rel(key)), stamp, root=self._local_root)
        else:
            raw = await self._get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            msg = "is nested too deeply" if isinstance(e, RecursionError) else f"({e})"
            raise HcsMetadataError(f"is not valid JSON {msg}", self.where(self._rel(key))
                                   ) from None

    def _consolidated_doc(self, path: str, kind: str) -> tuple[bool, Any]:
        """(known?, doc) without a read: from the probe or consolidated metadata."""
        key = f"{path}\0{kind}"
        if key in self.preloaded:
            return True, self.preloaded[key]
        if self.consolidated is None:
            return False, None
        return True, self.consolidated.get(key)

    async def _doc(self, path: str, name: str, stamp: list[Any] | None = None) -> Any | None:
        """The document ``name`` of node ``path``: known already, or read (None if absent);
        ``stamp`` receives the identity of a local file read."""
        found, doc = self._consolidated_doc(path, name)
        if found:
            return doc
        return await self._get_json(join_path(self.root, path, name), stamp)

    # -- nodes --------------------------------------------------------------------------

    async def _zarr_json(self, path: str) -> dict[str, Any] | None:
        """The zarr v3 document of the node at ``path``, checked to be an object; or None."""
        doc = await self._doc(path, "zarr.json")
        if doc is not None and not isinstance(doc, dict):
            raise HcsMetadataError("zarr.json must be a JSON object", self.where(path))
        return doc

    async def node(self, path: str) -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
        """(``"group"`` or ``"array"``, attributes, array document) of the node at ``path``,
        whichever it is; None if absent. The array document is :meth:`array_info`'s."""
        if self.zarr_format == 3:
            doc = await self._zarr_json(path)
            if doc is None:
                return None
            kind = doc.get("node_type", "group")
            if kind not in ("group", "array"):
                raise HcsMetadataError(f"node_type must be 'group' or 'array', got {kind!r}",
                                       self.where(path))
            attrs = doc.get("attributes", {}) or {}
            if not isinstance(attrs, dict):
                raise HcsMetadataError("attributes must be a JSON object", self.where(path))
            return kind, attrs, doc if kind == "array" else None
        attrs, is_group = await self.gather(self._doc(path, ".zattrs"),
                                            self._doc(path, ".zgroup"))
        if attrs is not None and not isinstance(attrs, dict):
            raise HcsMetadataError(".zattrs must be a JSON object", self.where(path))
        if is_group is not None:
            return "group", attrs or {}, None
        zarray = await self._doc(path, ".zarray")
        if zarray is None:
            return None
        if not isinstance(zarray, dict):
            raise HcsMetadataError(".zarray must be a JSON object", self.where(path))
        return "array", attrs or {}, {**zarray, "attributes": attrs or {}}

    def info_of(self, path: str, doc: dict[str, Any]) -> ArrayInfo:
        """:class:`ArrayInfo` of the array at ``path`` from its (already read) document."""
        return _parse_array_doc(doc, self.zarr_format, join_path(self.root, path),
                                self.where(path))

    async def group_attrs(self, path: str) -> dict[str, Any] | None:
        """Attributes of the group at ``path`` (relative to the plate root); None if absent.

        A zarr v2 group without ``.zattrs`` reads as absent: every OME node has attributes.
        """
        if self.zarr_format == 3:
            doc = await self._zarr_json(path)
            if doc is None:
                return None
            if doc.get("node_type") != "group":
                raise HcsMetadataError(f"expected a group, found {_a(doc.get('node_type'))}",
                                       self.where(path))
            attrs = doc.get("attributes", {})
        else:
            attrs = await self._doc(path, ".zattrs")
            if attrs is None:
                return None
        if not isinstance(attrs, dict):
            raise HcsMetadataError("group attributes must be a JSON object", self.where(path))
        return attrs

    async def array_info(self, path: str) -> ArrayInfo | None:
        """Shape, dtype, chunks and metadata document of the array at ``path``; None if absent.

        For local plates the document's identity is kept too: reads check that the array is
        still the one described (see :meth:`._chunks.ArrayReader._still_the_same`)."""
        stamp: list[Any] = []
        name = "zarr.json" if self.zarr_format == 3 else ".zarray"
        if self.zarr_format == 3:
            doc = await self._doc(path, name, stamp)
            if doc is None:
                return None
        else:
            doc, attrs = await asyncio.gather(self._doc(path, name, stamp),
                                              self._doc(path, ".zattrs"))
            if doc is None:
                return None
            if not isinstance(doc, dict):
                raise HcsMetadataError(".zarray must be a JSON object", self.where(path))
            doc = {**doc, "attributes": attrs if isinstance(attrs, dict) else {}}
        info = self.info_of(path, doc)
        if stamp:
            object.__setattr__(info, "stamp", stamp[0])
        return info

    def zarr_array(self, info: ArrayInfo) -> zarr.Array:
        """A zarr Array built from ``info`` without another metadata read."""
        from zarr.core.array import AsyncArray
        from zarr.storage import StorePath

        return zarr.Array(AsyncArray(info.doc, StorePath(self.store, info.path)))


# ------------------------------------------------------------------------------ opening


def is_url(s: str) -> bool:
    head = s.split("::")[0]
    return "://" in head and not head.startswith("file://")


def read_error(e: BaseException, where: str) -> HcsError:
    """The HcsError for a failed store read (timeouts, HTTP errors, permissions...)."""
    if isinstance(e, HcsError):
        return e
    if isinstance(e, TimeoutError):
        return HcsReadError("timed out while reading the store (set a longer timeout in "
                            "storage_options, e.g. client_kwargs for HTTP)", where)
    if isinstance(e, PermissionError):
        return HcsReadError(f"permission denied ({e})", where)
    return HcsReadError(f"cannot be read ({type(e).__name__}: {e})", where)


async def _probe(store: Store, root: str, source: str) -> dict[str, Any | None]:
    keys = ["zarr.json", ".zattrs", ".zgroup", ".zmetadata"]
    if not store._is_open:  # stores made by hand (ZipStore, ...) open on first use
        await store._open()
    reader = PlateStore(store, root, 0, source)  # bounded, checked reads of the root's docs

    async def get(k: str) -> Any | None:
        return await reader._get_json(join_path(root, k))

    # zarr v3 first: one read answers for v3 stores (consolidated metadata included)
    v3 = await get("zarr.json")
    if v3 is not None:
        return {"zarr.json": v3, ".zattrs": None, ".zgroup": None, ".zmetadata": None}
    docs = await asyncio.gather(*(get(k) for k in keys[1:]))
    return dict(zip(keys, [None, *docs], strict=True))


def _consolidated_index(probe: dict[str, Any | None], zarr_format: int
                        ) -> dict[str, Any] | None:
    """Map ``"<path>\\0<document name>"`` → document from consolidated metadata, if present."""
    if zarr_format == 3:
        cm = (probe["zarr.json"] or {}).get("consolidated_metadata")
        if not isinstance(cm, dict) or not isinstance(cm.get("metadata"), dict):
            return None
        out: dict[str, Any] = {"\0zarr.json": probe["zarr.json"]}
        for path, doc in cm["metadata"].items():
            out[f"{path.strip('/')}\0zarr.json"] = doc
        return out
    zm = probe[".zmetadata"]
    if not isinstance(zm, dict) or not isinstance(zm.get("metadata"), dict):
        return None
    out = {}
    for key, doc in zm["metadata"].items():
        path, _, name = key.rpartition("/")
        out[f"{path}\0{name}"] = doc
    return out


def open_store(obj: Any, storage_options: dict[str, Any] | None = None,
               consolidated: bool | None = None) -> PlateStore:
    """Open a local path, URL, ``.ozx``/``.zip`` file, zarr ``Store`` or zarr ``Group``.

    Parameters
    ----------
    obj
        What to open.
    storage_options
        fsspec options for URLs (``{"anon": True}`` for public S3 buckets, HTTP headers, ...).
    consolidated
        Use consolidated metadata: None (default) when present, False never, True require it.

    Raises
    ------
    HcsNotFoundError
        Nothing is there.
    HcsNotAPlateError
        Something is there, but not a zarr group.
    """
    root = ""
    if isinstance(obj, PlateStore):
        return obj
    if isinstance(obj, zarr.Group):
        store, root, source = obj.store, obj.path, f"{obj.store}/{obj.path}"
    elif isinstance(obj, Store):
        store, source = obj, str(obj)
    elif isinstance(obj, str | os.PathLike):
        s = os.fspath(obj)
        source = s
        if is_url(s):
            from zarr.storage import FsspecStore

            if s.lower().rstrip("/").endswith((".ozx", ".zip")) and "::" not in s:
                s = f"zip://::{s}"
            try:
                store = FsspecStore.from_url(s, storage_options=storage_options or {},
                                             read_only=True)
            except (ImportError, ValueError, TypeError) as e:
                raise HcsReadError(f"cannot open URL ({e})", source) from None
        else:
            if s.startswith("file://"):
                s = s[len("file://"):]
            p = Path(s).expanduser()
            if not p.exists():
                raise HcsNotFoundError("no such file or directory", source)
            if p.is_file():
                from zarr.storage import ZipStore

                try:
                    store = ZipStore(p, mode="r", read_only=True)
                    run_sync(store._ensure_open())
                except Exception as e:  # zipfile raises BadZipFile and friends
                    raise HcsNotAPlateError(f"is a file but not a zip/.ozx archive ({e})",
                                            source) from None
            else:
                from zarr.storage import LocalStore

                store = LocalStore(p, read_only=True)
    else:
        raise TypeError(f"cannot open a plate from {type(obj).__name__}: pass a path, URL, "
                        "zarr Store or zarr Group")
    try:
        probe = run_sync(_probe(store, root, source))
    except HcsError:
        raise
    except Exception as e:
        raise read_error(e, source) from e
    if probe["zarr.json"] is not None:
        zarr_format = 3
        if not isinstance(probe["zarr.json"], dict):
            raise HcsNotAPlateError("zarr.json is not a JSON object", source)
    elif probe[".zattrs"] is not None or probe[".zgroup"] is not None:
        zarr_format = 2
    else:
        raise HcsNotAPlateError("holds no zarr group (no zarr.json, .zattrs or .zgroup at its "
                                "root)", source)
    index = _consolidated_index(probe, zarr_format) if consolidated is not False else None
    if consolidated is True and index is None:
        raise HcsNotFoundError("consolidated=True but the store has no consolidated metadata",
                               source)
    preloaded = {f"\0{k}": v for k, v in probe.items()}
    return PlateStore(store, root, zarr_format, source, index, preloaded)
