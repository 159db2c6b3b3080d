"""DataTree → OME-Zarr plate on any zarr store (NGFF 0.4 / zarr v2 and 0.5 / zarr v3).

Order is what makes a write safe to interrupt: each array's metadata before its pixels
(streamed through dask, chunk-aligned, never a whole array in memory), then the group
documents from the leaves up: label images, labels groups, fields, wells, rows, and the
plate document last. A writer killed before the end leaves no plate document, so nothing
claims to be a complete plate; each document is written atomically where the store allows
(local files: temporary file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype

from .arrays import dask_array
from .errors import (
    HcsExistsError,
    HcsMetadataError,
    HcsPathError,
    HcsValueError,
    HcsVersionError,
    HcsWriteError,
    store_write_errors,
)
from .metadata import ImageSpec, LevelSpec, PlateSpec, plate_spec
from .ngff import WRITE_VERSIONS, check_relative_path, encode_attrs
from .stack import backend_of
from .store import group_documents, is_url, join_path, run_sync

__all__ = ["write_plate", "check_chunks", "open_writable", "write_arrays", "write_groups",
           "image_group_docs", "group_format"]

#: largest default chunk edge in y/x (pixels); leading dims are chunked by 1
DEFAULT_CHUNK_YX = 1024


def open_writable(store: Any, storage_options: dict[str, Any] | None = None) -> Store:
    """A writable zarr store for a path, URL or Store; refuses zip files."""
    if isinstance(store, Store):
        if store.read_only:
            raise HcsWriteError("the store is read-only", str(store))
        return store
    if isinstance(store, str | os.PathLike):
        s = os.fspath(store)
        if s.lower().rstrip("/").endswith((".ozx", ".zip")):
            raise HcsValueError("writing .ozx/.zip plates is not supported: write a directory and "
                           "zip it (metadata documents first)", s)
        for local in ("file://", "local://"):  # fsspec's names of the local file system
            if s.startswith(local):
                s = s[len(local):]
        if "://" in s:
            from zarr.storage import FsspecStore

            return FsspecStore.from_url(s, storage_options=storage_options or {},
                                        read_only=False)
        from zarr.storage import LocalStore

        if not s.strip():
            raise HcsPathError("is an empty path: name the plate's folder", repr(s))
        # absolute: "." or "" would otherwise write into (or clear) whatever the working
        # directory is when the write runs; normalised: "missing/../p.zarr" is p.zarr, which
        # the file system would only see once "missing" had been made
        path = Path(os.path.normpath(Path(s).expanduser().absolute()))
        _check_local_target(path, s)
        if path.exists() and not path.is_dir():
            raise HcsExistsError("exists and is not a directory", s)
        _check_not_inside_a_store(path, s)
        return LocalStore(path, read_only=False)
    raise TypeError(f"cannot write a plate to {type(store).__name__}: pass a path, URL or "
                    "zarr Store")


def _check_not_inside_a_store(path: Path, where: str) -> None:
    """A plate written into another zarr store (a well of a plate) would break it."""
    for parent in path.parents:
        if any((parent / doc).is_file() for doc in ("zarr.json", ".zgroup", ".zattrs",
                                                   ".zarray")):
            raise HcsExistsError(f"lies inside the zarr store {str(parent)!r}: a plate written "
                                 "there would break it; write it beside, not into, another "
                                 "store", where)


def _check_local_target(path: Path, where: str) -> None:
    """A directory a plate can be written to, or an :class:`HcsPathError` saying why not,
    before anything is written (a NUL byte, a name too long, a file where a folder must be)."""
    if "\0" in str(path):
        raise HcsPathError("holds a NUL byte", where.replace("\0", "\\0"))
    limit = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise HcsPathError(f"has a name of {len(os.fsencode(part))} bytes, more than the "
                               f"{limit} a file system name may have", where)
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise HcsPathError(f"cannot be made: {str(parent)!r} is a file, not a folder",
                                   where)
            break


def _check_documents(spec: PlateSpec, version: str) -> None:
    """Every group document the write will make, made now: a value JSON cannot hold (a
    numpy array in the attributes) fails here, before any pixel is written."""
    import json

    nodes: list[tuple[str, dict[str, Any], dict[str, Any]]] = [("/", spec.ome, spec.other)]
    for w in spec.wells:
        nodes.append((w.path, w.ome, w.other))
        for f in w.fields:
            nodes.append((f.path, f.ome, f.other))
            nodes.extend((lab.path, lab.ome, lab.other) for lab in f.labels)
            if f.labels_ome is not None:
                nodes.append((f"{f.path}/labels", f.labels_ome, f.labels_other))
    for path, ome, other in nodes:
        try:
            json.dumps(encode_attrs(ome, other, version))
        except (TypeError, ValueError, RecursionError) as e:
            raise HcsMetadataError(f"its attributes cannot be written as JSON ({e})",
                                   path) from None
    for r, attrs in spec.rows.items():
        try:
            json.dumps(attrs)
        except (TypeError, ValueError, RecursionError) as e:
            raise HcsMetadataError(f"its attributes cannot be written as JSON ({e})",
                                   r) from None


def _version_of(tree: xr.DataTree, ngff_version: str | None) -> str:
    if ngff_version is None:
        v = str(tree.attrs.get("ome", {}).get("version") or "0.5")
        ngff_version = v if v in WRITE_VERSIONS else "0.5"  # 0.6 trees are written as 0.5
    if ngff_version not in WRITE_VERSIONS:
        raise HcsVersionError(f"cannot write OME-NGFF {ngff_version!r} (writable: "
                              f"{', '.join(WRITE_VERSIONS)})")
    return ngff_version


async def group_format(store: Store, path: str = "") -> int | None:
    """The zarr format of the group at ``path`` (3 or 2), or None if there is none."""
    if await store.exists(join_path(path, "zarr.json")):
        return 3
    if (await store.exists(join_path(path, ".zgroup"))
            or await store.exists(join_path(path, ".zattrs"))):
        return 2
    return None


async def _exists(store: Store) -> bool:
    """Whether the target holds anything: a plate, other zarr data, or the remains of an
    interrupted write (keys without a root document, which a new plate would mix with)."""
    if await group_format(store) is not None or await store.exists(".zarray"):
        return True
    async for _ in store.list():
        return True
    return False


async def _is_zarr(store: Store) -> bool:
    return await group_format(store) is not None or await store.exists(".zarray")


def _check_replaceable(target: Store, where: str) -> None:
    """``mode="w"`` replaces a zarr store, nothing else: a folder of other files (a user's
    project folder, the working directory) is never cleared."""
    from zarr.storage import LocalStore

    if not run_sync(_is_zarr(target)):
        raise HcsExistsError("holds files that are not a zarr store: mode='w' replaces only a "
                             "zarr store, so nothing was deleted; write to a new or empty "
                             "folder", where)
    if isinstance(target, LocalStore):
        root = Path(str(target.root)).resolve()
        cwd = Path.cwd().resolve()
        if cwd == root or root in cwd.parents:
            raise HcsExistsError("is (or holds) the working directory: replacing it would "
                                 "delete the folder you work in; write elsewhere", where)
        _check_clearable(Path(str(target.root)), where)


#: what a plate's root folder holds besides its rows and tables
_ROOT_FILES = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata", ".xarray-hcs.lock")


def _check_clearable(root: Path, where: str) -> None:
    """Before anything is deleted: a file of the user's beside the plate's rows (a README),
    or a symbolic link anywhere in it (whose target is not the plate's to delete, and which
    the store cannot delete as a folder), is refused, rather than a store half cleared."""
    for entry in os.scandir(root):
        if entry.is_symlink():
            raise HcsExistsError(f"holds a symbolic link, {entry.name!r}: mode='w' deletes "
                                 "only what is the plate's own; nothing was deleted", where)
        if entry.is_file(follow_symlinks=False) and entry.name not in _ROOT_FILES:
            raise HcsExistsError(f"holds {entry.name!r}, a file that is no part of a plate: "
                                 "move it out (or delete it) first; nothing was deleted", where)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            if os.path.islink(os.path.join(folder, name)):
                link = os.path.relpath(os.path.join(folder, name), root)
                raise HcsExistsError(f"holds a symbolic link, {link!r}: mode='w' deletes "
                                     "only what is the plate's own; nothing was deleted",
                                     where)


#: root documents: whatever claims that the store is a zarr group, a plate
_ROOT_DOCUMENTS = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata", ".zarray")


async def _clear(store: Store, zarr_format: int) -> None:
    """Delete everything but a bare root group, which is made first: a clear interrupted
    half-way leaves an empty zarr group (which another ``mode="w"`` may replace), never a
    plate listing wells that are gone, nor a folder that is no zarr store."""
    bare = group_documents("", {}, zarr_format)
    await _set_all(store, bare)  # replaces the plate's root document atomically
    for name in _ROOT_DOCUMENTS:
        if name not in bare and await store.exists(name):
            await store.delete(name)
    for entry in [e.rstrip("/") async for e in store.list_dir("")]:
        if entry and entry not in bare:
            if await store.exists(entry):  # a file (a document, the lock)
                await store.delete(entry)
            else:
                await store.delete_dir(entry)


def _default_chunks(var: xr.Variable) -> tuple[int, ...]:
    shape = var.shape
    return tuple(1 if i < len(shape) - 2 else max(1, min(n, DEFAULT_CHUNK_YX))
                 for i, n in enumerate(shape))


class _Templates:
    """Array metadata documents, made once per (shape, dtype, chunks, dims) by zarr itself."""

    def __init__(self, zarr_format: int) -> None:
        self.zarr_format = zarr_format
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._buffers: dict[int, dict[str, Any]] = {}

    def documents(self, meta: Any) -> dict[str, Any]:
        """The metadata documents of ``meta``, encoded once (they hold no path)."""
        docs = self._buffers.get(id(meta))
        if docs is None:
            docs = self._buffers[id(meta)] = meta.to_buffer_dict(default_buffer_prototype())
        return docs

    def metadata(self, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
                 dims: tuple[str, ...], fill: Any = None) -> Any:
        fill = _fill_for(fill, dtype)
        key = (shape, dtype.str, chunks, dims, np.asarray(fill).tobytes())
        meta = self._cache.get(key)
        if meta is None:
            kw: dict[str, Any] = {}
            if self.zarr_format == 3:
                kw["dimension_names"] = list(dims)
            else:
                kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
            arr = zarr.create_array(zarr.storage.MemoryStore(), shape=shape, dtype=dtype,
                                    chunks=chunks, fill_value=fill,
                                    zarr_format=self.zarr_format, **kw)
            meta = self._cache[key] = arr.metadata
        return meta


def _fill_for(fill: Any, dtype: np.dtype) -> Any:
    """The source's fill value as one of ``dtype`` (a cast array keeps it where it can), else
    0: what absent chunks of the written array read as."""
    if fill is not None:
        try:
            with np.errstate(all="ignore"):
                cast = np.asarray(fill).astype(dtype)[()]
            if _same_value(cast, fill):
                return cast
        except (TypeError, ValueError, OverflowError):
            pass
    return np.zeros((), dtype=dtype)[()]


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) or bool(np.isnan(a) and np.isnan(b))
    except (TypeError, ValueError):
        return False


def _source(lv: LevelSpec, chunks: tuple[int, ...]) -> Any:
    """The level's data as a dask array on the target chunks, reading the source lazily."""
    import dask.array as da

    var = lv.variable
    backend = backend_of(var) if not var.encoding.get("ome_squeezed") else None
    if backend is not None and backend.shape == var.shape:
        token = f"copy\0{backend.plate_store.source}\0{backend.info.path}\0{chunks}"
        return dask_array(backend, token, chunks, label=backend.info.path)
    data = var.data
    if isinstance(data, da.Array):
        return data.rechunk(chunks)
    return var.chunk(dict(zip(var.dims, chunks, strict=True))).data


@store_write_errors
def write_plate(tree: xr.DataTree, store: Any, ngff_version: str | None = None,
                mode: str = "w-", compute: bool = True,
                storage_options: dict[str, Any] | None = None, progress: bool = False,
                chunks: dict[str, int] | None = None, pixels: bool = True) -> Any:
    """Write a plate tree to ``store``; see :meth:`HcsAccessor.to_zarr`.

    ``pixels=False`` writes every document and creates every array without writing pixels
    (the plan of :func:`xarray_hcs.create_plate`).
    """
    if mode not in ("w-", "w"):
        raise HcsValueError(f"mode must be 'w-' (fail if it exists) or 'w' (overwrite), got "
                            f"{mode!r}")
    from .tree import gc_paused

    version = _version_of(tree, ngff_version)
    check_chunks(chunks, (v for node in tree.subtree for v in node.data_vars.values()))
    zarr_format = 2 if version == "0.4" else 3
    with gc_paused():
        spec = plate_spec(tree)  # checks everything before anything is written
    _check_documents(spec, version)
    target = open_writable(store, storage_options)
    if run_sync(_exists(target)):
        if mode == "w-":
            raise HcsExistsError(
                "already holds data (pass mode='w' to replace it)" if run_sync(
                    _is_zarr(target)) else "already holds data, files that are not a zarr "
                "store: write to a new or empty folder", str(store))
        _check_replaceable(target, str(store))
        reading = _read_from(target, spec, tree.encoding.get("source"))
        if reading is not None:
            raise HcsExistsError(
                f"the tree reads its pixels or tables from {reading}: overwriting it would "
                "delete them before they are copied; write to another path (and rename)",
                str(store))
        run_sync(_clear(target, zarr_format))
    else:
        # the root is a zarr group (no plate yet) from the first write on: a write killed
        # half-way leaves a zarr store, which mode="w" may replace, never a bare folder
        run_sync(_set_all(target, group_documents("", {}, zarr_format)))
    with gc_paused():
        stored = write_arrays(target, list(spec.images()), zarr_format, chunks, pixels,
                              defer_documents=compute)
    return _run(stored, lambda: write_groups(target, spec, version, zarr_format), compute,
                progress)


def _read_from(target: Store, spec: PlateSpec, opened_from: Any = None) -> str | None:
    """The store the tree still reads from, if ``target`` is it (or holds it, or is in it):
    the store it was opened from, or one behind its unmodified levels and unread tables."""
    from zarr.storage import FsspecStore, LocalStore

    from .tables import TableSource

    def key(store: Any) -> str | None:
        if isinstance(store, LocalStore):
            return os.path.realpath(str(store.root))
        if isinstance(store, FsspecStore):
            try:  # the canonical URL, whatever spelling opened it
                return str(store.fs.unstrip_protocol(store.path)).rstrip("/")
            except Exception:  # filesystems without it: compare the paths
                return str(store.path).rstrip("/")
        return None

    mine = key(target)
    if mine is None:
        return None
    if isinstance(opened_from, str) and not is_url(opened_from):
        theirs = os.path.realpath(opened_from)
        if theirs == mine or theirs.startswith(mine + "/") or mine.startswith(theirs + "/"):
            return opened_from
    elif isinstance(opened_from, str) and opened_from.rstrip("/") == mine:
        return opened_from
    from .lineage import stores_read_by
    from .store import PlateStore

    # every store the tree's arrays and tables read from, however derived (dask graphs,
    # lazy wrappers, stacked views): not only the unmodified levels
    held = [lv.variable for img in spec.images() for lv in img.levels]
    held += [h for g in spec.table_groups() for _, _, h in g.tables if isinstance(h, TableSource)]
    for found in stores_read_by(held):
        store, root = (found.store, found.root) if isinstance(found, PlateStore) else (found, "")
        theirs = key(store)
        if theirs is None:
            continue
        theirs = theirs if not root else f"{theirs}/{root}"
        if theirs == mine or theirs.startswith(mine + "/") or mine.startswith(theirs + "/"):
            return found.source if isinstance(found, PlateStore) else theirs
    return None


def _run(stored: Any, then: Any, compute: bool, progress: bool) -> Any:
    """Pixels (a dask graph, or None), then ``then()``: now, or as one delayed."""
    import dask

    if not compute:
        return dask.delayed(lambda _: then(), pure=False)(stored)
    if stored is not None:  # computed directly: wrapping a large graph in a delayed costs
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                dask.compute(stored)
        else:
            dask.compute(stored)
    then()
    return None


def write_arrays(target: Store, images: list[ImageSpec], zarr_format: int,
                 chunks: dict[str, int] | None, pixels: bool = True,
                 defer_documents: bool = True) -> Any:
    """Create the level arrays of ``images`` and return the lazy pixel writes.

    Array documents are written now, except, with ``defer_documents``, those of unmodified
    stored levels copied to a local store: each of those is written by its level's copy
    task, just before its chunks (``to_zarr(compute=False)`` writes them all now, as
    xarray's ``to_zarr`` writes metadata before the delayed pixels).
    """
    import dask.array as da

    from ._chunks import ChunkWriter

    templates = _Templates(zarr_format)
    sources, targets, copies = [], [], []
    array_docs: dict[str, Any] = {}
    for img in images:
        for lv in img.levels:
            var = lv.variable
            c = _chunks_for(var, lv.chunks, chunks)
            meta = templates.metadata(var.shape, var.dtype, c, tuple(var.dims), lv.fill)
            path = join_path(img.path, lv.path)
            check_relative_path(path, "node path", path)
            docs = templates.documents(meta)
            dest = _target(target, meta, path, zarr_format) if pixels else None
            backend = backend_of(var) if not var.encoding.get("ome_squeezed") else None
            # an unmodified stored level: one task reads it whole and writes its chunks (not a
            # dask graph of a few tasks per chunk); deferred, it writes the level's documents
            # too, so their file creation overlaps other levels' reads and encodes
            whole = (isinstance(dest, ChunkWriter) and backend is not None
                     and backend.shape == var.shape and var.nbytes <= _WHOLE_LEVEL_BYTES)
            if whole and defer_documents:
                root = os.path.join(str(target.root), path)
                copies.append((backend, dest, {os.path.join(root, name): buf.to_bytes()
                                               for name, buf in docs.items()}))
                continue
            for name, buf in docs.items():
                array_docs[join_path(path, name)] = buf
            if whole:
                copies.append((backend, dest, {}))
            elif dest is not None:
                targets.append(dest)
                sources.append(_source(lv, c))
    run_sync(_set_all(target, array_docs))
    stored: list[Any] = [_copy_levels(copies)] if copies else []
    if sources:
        stored.append(da.store(sources, targets, lock=False, compute=False))
    return stored or None


#: levels up to this size are copied by one task each (read whole, write every chunk)
_WHOLE_LEVEL_BYTES = 64 * 2**20


def _copy_levels(jobs: list[tuple[Any, Any, dict[str, bytes]]]) -> Any:
    """One delayed for all whole-level copies: a task per level under a single key.

    Built as a plain graph: a list of one ``dask.delayed`` per level costs dask about
    0.15-0.3 s more to compute for 1,152 levels (measured), a tenth of the whole write.
    """
    import uuid

    from dask.delayed import Delayed

    name = f"xarray-hcs-copy-{uuid.uuid4().hex}"
    graph: dict[Any, Any] = {(name, i): (_copy_level, source, dest, docs)
                             for i, (source, dest, docs) in enumerate(jobs)}
    graph[name] = (len, list(graph))  # depends on every copy
    return Delayed(name, graph)


def _copy_level(source: Any, dest: Any, docs: dict[str, bytes]) -> None:
    from ._chunks import write_file

    for path, data in docs.items():  # the array's documents (local files), then its chunks
        write_file(path, data)
    full = tuple(slice(0, n) for n in source.shape)
    dest[full] = source._getitem(full)


def _target(store: Store, meta: Any, path: str, zarr_format: int) -> Any:
    """Where dask stores a level: chunk files directly (local, common codecs), else zarr."""
    from zarr.core.array import AsyncArray
    from zarr.storage import LocalStore, StorePath

    from ._chunks import ChunkWriter

    if isinstance(store, LocalStore):
        doc = meta.to_dict()
        writer = ChunkWriter.for_array(os.path.join(str(store.root), path), doc, zarr_format)
        if writer is not None:
            return writer
    return zarr.Array(AsyncArray(meta, StorePath(store, path)))


def check_chunks(chunks: Any, images: Iterable[Any]) -> None:
    """Refuse a ``chunks`` argument that is not ``{dimension: edge}`` with edges integers
    (``-1``: the whole axis) and dimensions the images have: a misspelt name would be
    silently ignored."""
    if chunks is None:
        return
    if not isinstance(chunks, Mapping):
        raise HcsValueError(f"chunks must be a mapping of dimension name to chunk edge, "
                            f"got {type(chunks).__name__}")
    dims = {str(d) for im in images for d in getattr(im, "dims", ())}
    for d, edge in chunks.items():
        if not isinstance(edge, (int, np.integer)) or isinstance(edge, bool) or edge < -1 \
                or edge == 0:
            raise HcsValueError(f"chunks[{d!r}] must be an integer >= 1 (or -1: the whole "
                                f"axis), got {edge!r}")
        if d not in dims:
            raise HcsValueError(f"chunks names {d!r}, which is no dimension of the arrays "
                                f"written (they have {sorted(dims)})")


def _chunks_for(var: xr.Variable, stored: tuple[int, ...] | None,
                wanted: dict[str, int] | None) -> tuple[int, ...]:
    c = list(stored if stored is not None else _default_chunks(var))
    for i, d in enumerate(var.dims):
        if wanted and d in wanted:
            c[i] = wanted[d] if wanted[d] > 0 else var.shape[i]
        c[i] = max(1, min(c[i], var.shape[i]))
    return tuple(c)


async def _set_all(store: Store, docs: dict[str, Any]) -> None:
    import asyncio

    from zarr.core.buffer import Buffer

    sem = asyncio.Semaphore(64)

    async def put(key: str, value: Any) -> None:
        buf = value if isinstance(value, Buffer) else default_buffer_prototype().buffer.from_bytes(
            value)
        async with sem:
            await store.set(key, buf)

    await asyncio.gather(*(put(k, v) for k, v in docs.items()))


def image_group_docs(img: ImageSpec, version: str, zarr_format: int) -> dict[str, bytes]:
    """The documents of one image: its label images and labels group, then itself."""
    out: dict[str, bytes] = {}
    for lab in img.labels:
        out.update(group_documents(lab.path, encode_attrs(lab.ome, lab.other, version),
                                   zarr_format))
    if img.labels_ome is not None:
        out.update(group_documents(join_path(img.path, "labels"),
                                   encode_attrs(img.labels_ome, img.labels_other, version),
                                   zarr_format))
    out.update(group_documents(img.path, encode_attrs(img.ome, img.other, version), zarr_format))
    return out


def write_groups(store: Store, spec: PlateSpec, version: str, zarr_format: int) -> None:
    """Group documents from the leaves up; the plate's last (see the module docstring)."""
    images: dict[str, bytes] = {}
    for w in spec.wells:
        for f in w.fields:
            images.update(image_group_docs(f, version, zarr_format))
    wells = {k: v for w in spec.wells
             for k, v in group_documents(w.path, encode_attrs(w.ome, w.other, version),
                                         zarr_format).items()}
    rows = {k: v for r, attrs in spec.rows.items()
            for k, v in group_documents(r, attrs, zarr_format).items()}
    plate = group_documents("", encode_attrs(spec.ome, spec.other, version), zarr_format)
    table_files, table_groups = _table_docs(spec, zarr_format)
    for stage in (table_files, table_groups, images, wells, rows, plate):
        run_sync(_set_all(store, stage))


def _table_docs(spec: PlateSpec, zarr_format: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Every table's files, and each tables group's document (which lists them)."""
    import asyncio

    from .tables import held_rows, table_documents, tables_group_documents

    groups = spec.table_groups()
    jobs = [(g, name, meta, held) for g in groups for name, meta, held in g.tables]

    async def all_rows() -> list[Any]:  # read concurrently; encoded below, off the loop
        return await asyncio.gather(*(held_rows(held, meta, f"/{join_path(g.path, name)}")
                                      for g, name, meta, held in jobs))

    frames = run_sync(all_rows()) if jobs else []
    out: dict[str, bytes] = {}
    for (g, name, meta, _), df in zip(jobs, frames, strict=True):
        tpath = join_path(g.path, name)
        for k, v in table_documents(df, meta, zarr_format, f"/{tpath}").items():
            out[join_path(tpath, k)] = v
    listing: dict[str, bytes] = {}
    for g in groups:
        for k, v in tables_group_documents([n for n, _, _ in g.tables], g.attrs,
                                           zarr_format).items():
            listing[join_path(g.path, k)] = v
    return out, listing

