"""Editing plates on disk, for pipelines: add images safely from many processes, or plan a
plate once and fill its arrays from many workers without any lock.

``add_image``: a field is reserved under a cross-process file lock (``filelock``), its pixels
and its own documents are written without the lock, and the well and plate documents are
re-read and rewritten under the lock at the end; documents are replaced atomically (temporary
file + rename). At every moment the plate lists only images whose arrays are complete: a
writer killed at any point leaves orphan arrays at worst, never a listed image that is
missing or a torn document.

``remove_image``: under the same lock, the well stops listing the field (the plate stops
listing the well, if it was its last field) before anything is deleted, so a remover killed
in between leaves an unlisted orphan group, never a listed image whose arrays are missing.

``create_plate`` + ``write_field``: every document and every (empty) array is written once,
up front; then each worker writes the pixels of its own fields. No metadata changes after the
plan, so workers need no lock and may run anywhere a ``dask.distributed`` cluster runs them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import xarray as xr
from zarr.abc.store import Store

from ._xarray_internals import NodeSpec, assemble_tree
from .edit import (
    as_image,
    check_labels_arg,
    check_levels,
    column_name,
    field_nodes,
    image_levels,
    plate_with_image,
)
from .errors import (
    HcsMetadataError,
    HcsNotAPlateError,
    HcsNotFoundError,
    HcsTypeError,
    HcsValueError,
    HcsWriteError,
    store_write_errors,
)
from .metadata import _image_spec, _label_specs
from .ngff import Plate, check_name, check_relative_path, decode_attrs, encode_attrs
from .store import PlateStore, group_documents, join_path, run_sync
from .write import (
    _set_all,
    check_chunks,
    group_format,
    image_group_docs,
    open_writable,
    write_arrays,
    write_plate,
)

__all__ = ["add_image", "remove_image", "create_plate", "write_field", "LOCK_NAME"]

#: the lock file, inside the plate (readers ignore it)
LOCK_NAME = ".xarray-hcs.lock"


def _local_dir(target: Store) -> str | None:
    from zarr.storage import LocalStore

    return str(target.root) if isinstance(target, LocalStore) else None


@contextmanager
def _locked(target: Store, lock: bool, timeout: float) -> Any:
    if not lock:
        yield
        return
    root = _local_dir(target)
    if root is None:
        raise HcsValueError(
            f"cannot take a cross-process lock on {target}: locks work on local file systems "
            "only. Pass lock=False if no other process writes to this plate, or use "
            "create_plate + write_field, which need no lock", str(target))
    from filelock import FileLock, Timeout

    path = os.path.join(root, LOCK_NAME)
    plate_lock = FileLock(path, timeout=timeout)
    try:
        os.makedirs(root, exist_ok=True)
        plate_lock.acquire()
    except Timeout:
        raise HcsWriteError(f"timed out after {timeout} s waiting for the plate's lock",
                       root) from None
    except OSError as e:  # the lock's path is a directory, a symlink, or not writable
        raise HcsWriteError(f"cannot take the plate's lock: {e.strerror or e}", path) from e
    try:
        yield
    finally:
        plate_lock.release()


def _format(ps: PlateStore | None, version: str | None) -> tuple[int, str]:
    if ps is not None:
        return ps.zarr_format, ""
    v = version or "0.5"
    if v not in ("0.4", "0.5"):
        raise HcsMetadataError(f"cannot write OME-NGFF {v!r}")
    return (2 if v == "0.4" else 3), v


def _reader(target: Store) -> PlateStore | None:
    """A PlateStore over ``target`` if it holds a zarr group at its root, else None."""

    fmt = run_sync(group_format(target))
    return None if fmt is None else PlateStore(target, "", fmt, str(target))


def _read(ps: PlateStore, path: str, version: str | None) -> tuple[dict, dict] | None:
    attrs = run_sync(ps.group_attrs(path))
    if attrs is None:
        return None
    return decode_attrs(attrs, ps.zarr_format, ps.where(path), default_version=version)


def _plate_state(target: Store, version: str | None, name: str | None
                 ) -> tuple[PlateStore | None, dict[str, Any], dict[str, Any], int, str]:
    ps = _reader(target)
    zarr_format, new_version = _format(ps, version)
    if ps is None:
        plate = {"rows": [], "columns": [], "wells": []}
        if name is not None:
            plate["name"] = name
        return None, {"version": new_version, "plate": plate}, {}, zarr_format, new_version
    got = _read(ps, "", None)
    if got is None or "plate" not in got[0]:
        raise HcsNotAPlateError("holds zarr data but no plate to add images to", str(target))
    ome, other = got
    return ps, ome, other, zarr_format, ome["version"]


@store_write_errors
def add_image(store: Any, row: str, column: Any, image: Any, field: str | None = None,
              acquisition: int | None = None, acquisition_name: str | None = None,
              levels: int | None = None, labels: Mapping[str, Any] | None = None,
              ngff_version: str | None = None, name: str | None = None, lock: bool = True,
              timeout: float = 120, chunks: dict[str, int] | None = None,
              storage_options: dict[str, Any] | None = None) -> str:
    """Add ``image`` as a new field of well ``row``/``column`` of the plate at ``store``.

    Safe with many processes adding images to the same plate at once (local stores: a file
    lock guards the metadata; pixels are written outside it). Creates the plate if ``store``
    is empty (``ngff_version``, default 0.5; ``name``).

    Parameters
    ----------
    store
        Local directory (or zarr Store; non-local stores need ``lock=False``).
    row, column, image, field, acquisition, acquisition_name, levels, labels
        As for :meth:`HcsAccessor.add_image`.
    lock
        Take the plate's cross-process lock (default). False only if nobody else writes.
    timeout
        Seconds to wait for the lock before raising :class:`HcsWriteError`.
    chunks
        Chunk edge per dimension name for the new arrays.

    Returns
    -------
    str
        The new field's path (``"B/03/1"``).
    """
    # arguments are checked before anything is read or written: a refused call leaves no
    # trace, and never reads a path it names
    check_name(row, "row name", str(store))
    check_name(str(column) if isinstance(column, (int, np.integer)) and not isinstance(
        column, bool) and column >= 0 else column, "column name", str(store))
    if field is not None:
        check_name(str(field), "field path", str(store))
    as_image(image)
    check_labels_arg(labels, str(store))
    if not isinstance(lock, bool):
        raise HcsTypeError(f"lock must be True or False, got {lock!r}", str(store))
    check_levels(levels)
    check_chunks(chunks, [image, *(labels or {}).values()])
    target = open_writable(store, storage_options)
    with _locked(target, lock, timeout):
        ps, plate_ome, plate_other, zarr_format, version = _plate_state(
            target, ngff_version, name)
        plate = Plate.from_dict(plate_ome["plate"], str(store))
        col = column_name(plate, column)
        wpath = f"{row}/{col}"
        well = _read(ps, wpath, version) if ps is not None else None
        _, _, fpath, acq = plate_with_image(plate_ome, well[0] if well else None, row, col,
                                            field, acquisition, acquisition_name)
        if field is None:  # skip numbers other writers reserved but have not listed yet
            while _exists_group(target, join_path(wpath, fpath)):
                fpath = str(int(fpath) + 1) if fpath.isdigit() else fpath + "0"
        elif _exists_group(target, join_path(wpath, fpath)):
            raise HcsMetadataError(f"field {fpath!r} already exists in well {wpath}", wpath)
        if levels is None:
            levels = _levels_of_plate(ps, plate, version)
        # reserve the field: a bare group nobody lists yet
        run_sync(_set_all(target, group_documents(join_path(wpath, fpath), {}, zarr_format)))
    full = join_path(wpath, fpath)
    try:
        nodes: dict[str, NodeSpec | None] = {"": NodeSpec()}
        nodes.update(field_nodes(full, image, levels, acq, version,
                                 dict(labels) if labels else None, f"{row}{col}_{fpath}"))
        mini = assemble_tree(nodes)
        fspec = _image_spec(mini, full, "image")
        _label_specs(mini, fspec)
        stored = write_arrays(target, [fspec, *fspec.labels], zarr_format, chunks)
        if stored is not None:
            import dask

            dask.compute(stored)
        run_sync(_set_all(target, image_group_docs(fspec, version, zarr_format)))
    except BaseException:
        _release(target, full, lock, timeout)
        raise
    with _locked(target, lock, timeout):
        _publish(target, wpath, fpath, acq, acquisition_name, version, zarr_format, name)
    return full


def _release(target: Store, full: str, lock: bool, timeout: float) -> None:
    """Delete a field this writer reserved but could not fill (nobody lists it yet). Best
    effort: the error that stopped the writer is the one to report, not this one's."""
    try:
        with _locked(target, lock, timeout):
            _unpublish(target, full)
            run_sync(target.delete_dir(full))
    except Exception:  # noqa: BLE001
        pass


def _exists_group(target: Store, path: str) -> bool:
    return run_sync(group_format(target, path)) is not None


def _levels_of_plate(ps: PlateStore | None, plate: Plate, version: str) -> int | None:
    """How many levels the plate's first field has (new fields match it), if any."""
    if ps is None:
        return None
    for w in plate.wells:
        got = _read(ps, w.path, version)
        images = (got[0].get("well") or {}).get("images", []) if got else []
        for im in images:
            f = _read(ps, join_path(w.path, im["path"]), version)
            if f and f[0].get("multiscales"):
                return len(f[0]["multiscales"][0].get("datasets", [])) or None
    return None


def _drop_consolidated(target: Store, zarr_format: int) -> None:
    """Remove the plate's consolidated metadata, before its listing documents change.

    Readers (ours included) trust a root's consolidated index over the documents; edited
    behind it, it would list a removed field (read as fill values) and hide added ones.
    Without it, readers read the documents, which are consistent at every step.
    """
    import json

    from zarr.core.buffer import default_buffer_prototype

    if zarr_format == 2:
        if run_sync(target.exists(".zmetadata")):
            run_sync(target.delete(".zmetadata"))
        return
    raw = run_sync(target.get("zarr.json", default_buffer_prototype()))
    if raw is None:
        return
    doc = json.loads(raw.to_bytes())
    if doc.get("consolidated_metadata") is not None:
        doc.pop("consolidated_metadata")
        run_sync(_set_all(target, {"zarr.json": json.dumps(doc, indent=2).encode()}))


def _publish(target: Store, wpath: str, fpath: str, acq: int | None,
             acquisition_name: str | None, version: str, zarr_format: int,
             name: str | None) -> None:
    """List the new field: under the lock, from the documents as they are now."""
    _drop_consolidated(target, zarr_format)
    ps, plate_ome, plate_other, _, _ = _plate_state(target, version, name)
    well = _read(ps, wpath, version) if ps is not None else None
    new_plate, new_well, _, _ = plate_with_image(plate_ome, well[0] if well else None,
                                                 *wpath.split("/"), fpath, acq,
                                                 acquisition_name)
    plate = Plate.from_dict(plate_ome["plate"])
    declared = dict(new_plate)
    if wpath not in plate.well_paths:
        # first declare rows, columns and acquisitions, without the well: all harmless
        declared = {**new_plate, "plate": {**new_plate["plate"], "wells": [
            w for w in new_plate["plate"]["wells"] if w["path"] != wpath]}}
    if declared != plate_ome:
        run_sync(_set_all(target, group_documents(
            "", encode_attrs(declared, plate_other, version), zarr_format)))
    row = wpath.split("/")[0]
    if not _exists_group(target, row):
        run_sync(_set_all(target, group_documents(row, {}, zarr_format)))
    well_other = {} if well is None else well[1]
    run_sync(_set_all(target, group_documents(
        wpath, encode_attrs(new_well, well_other, version), zarr_format)))
    if declared != new_plate:  # now the well exists: list it
        run_sync(_set_all(target, group_documents(
            "", encode_attrs(new_plate, plate_other, version), zarr_format)))


@store_write_errors
def remove_image(store: Any, row: str, column: Any, field: str, delete: bool = True,
                 lock: bool = True, timeout: float = 120,
                 storage_options: dict[str, Any] | None = None) -> str:
    """Remove field ``field`` of well ``row``/``column`` from the plate at ``store``.

    Safe beside other processes adding and removing images (the lock of :func:`add_image`).
    The well document stops listing the field first; if it was the well's last field, the
    plate document stops listing the well instead (the plate's rows and columns stay); a
    ``field_count`` comes down to the most fields any well still has. Then, with ``delete``,
    the field's group (arrays, labels, tables) is deleted, and with it the well's group if the
    well is no longer listed.

    Parameters
    ----------
    store
        Local directory (or zarr Store; non-local stores need ``lock=False``).
    row, column, field
        The field to remove; ``column`` as in :func:`add_image` (``3`` finds ``"03"``).
    delete
        Delete the removed field's data (default), or only stop listing it.
    lock, timeout, storage_options
        As for :func:`add_image`.

    Returns
    -------
    str
        The removed field's path (``"B/03/1"``).

    Raises
    ------
    HcsNotAPlateError
        ``store`` holds no plate.
    HcsNotFoundError
        The plate lists no such well, or the well no such field.
    HcsPathError
        ``row``, ``column`` or ``field`` is not one safe path component.
    """
    target = open_writable(store, storage_options)
    where = str(store)
    for what, name in (("row", row), ("column", str(column)), ("field", field)):
        check_relative_path(name, f"{what} name", where, parts=1)
    _plate_to_edit(target, where)  # no lock file where there is no plate
    with _locked(target, lock, timeout):
        ps, plate_ome, plate_other = _plate_to_edit(target, where)
        version = plate_ome["version"]
        plate = Plate.from_dict(plate_ome["plate"], where)
        wpath = f"{row}/{column_name(plate, column)}"
        if wpath not in plate.well_paths:
            raise HcsNotFoundError(f"the plate lists no well {wpath!r}", where)
        well = _read(ps, wpath, version)
        images = list((well[0].get("well") or {}).get("images", [])) if well else []
        kept = [im for im in images if im.get("path") != field]
        if len(kept) == len(images):
            raise HcsNotFoundError(f"well {wpath} lists no field {field!r}", ps.where(wpath))
        zarr_format = ps.zarr_format
        _drop_consolidated(target, zarr_format)
        new_plate = dict(plate_ome["plate"])
        # the well document always says what the well holds now, even nothing: an adder
        # publishing into this well later reads it, and must not list the removed field
        new_well = {**well[0], "well": {**well[0]["well"], "images": kept}}
        run_sync(_set_all(target, group_documents(
            wpath, encode_attrs(new_well, well[1], version), zarr_format)))
        if not kept:  # a well the plate lists holds a field: unlist the well as well
            new_plate["wells"] = [w for w in new_plate["wells"] if w["path"] != wpath]
        if "field_count" in new_plate:  # the most fields of any well, which may now be fewer
            counts = [len(kept)] + [
                len(((_read(ps, w.path, version) or ({},))[0].get("well") or {}).get(
                    "images", [])) for w in plate.wells if w.path != wpath]
            new_plate["field_count"] = max(counts)
        if new_plate != plate_ome["plate"]:
            run_sync(_set_all(target, group_documents(
                "", encode_attrs({**plate_ome, "plate": new_plate}, plate_other, version),
                zarr_format)))
        if delete:
            try:
                _unpublish(target, join_path(wpath, field))
                run_sync(target.delete_dir(join_path(wpath, field)))
            except OSError as e:
                raise HcsWriteError(
                    f"field {field!r} is no longer listed, but its data could not be deleted "
                    f"({e.strerror or e}): delete the folder yourself",
                    str(store).rstrip("/") + "/" + join_path(wpath, field)) from e
            if not kept and not _holds_groups(target, wpath):
                # the well goes only if nothing else is in it: a field another writer has
                # reserved (under this lock) and is filling must never be deleted
                run_sync(target.delete_dir(wpath))
    return join_path(wpath, field)


def _unpublish(target: Store, path: str) -> None:
    """Delete the documents of every group and array below ``path`` before anything else:
    a reader that meets a missing chunk of a removed array then finds the array gone too,
    and says so, instead of reading the missing chunk as fill values."""
    async def docs() -> list[str]:
        return [k async for k in target.list_prefix(path + "/")
                if k.rsplit("/", 1)[-1] in _DOCUMENTS]

    keys = run_sync(docs())
    for key in sorted(keys, key=lambda k: -k.count("/")):  # the arrays', then the groups'
        run_sync(target.delete(key))


#: the documents of zarr nodes (v3, v2)
_DOCUMENTS = ("zarr.json", ".zarray", ".zattrs", ".zgroup")


def _holds_groups(target: Store, wpath: str) -> bool:
    """Whether the well's group holds anything but its own documents (a reserved field)."""
    async def children() -> bool:
        async for _ in target.list_dir(wpath):
            name = _.rstrip("/")
            if name not in (*_WELL_DOCUMENTS, "") and not name.endswith(".partial"):
                return True
        return False

    return run_sync(children())


#: what a well group's own documents are called (v3, v2)
_WELL_DOCUMENTS = ("zarr.json", ".zattrs", ".zgroup")


def _plate_to_edit(target: Store, where: str) -> tuple[PlateStore, dict[str, Any],
                                                      dict[str, Any]]:
    ps = _reader(target)
    got = _read(ps, "", None) if ps is not None else None
    if ps is None or got is None or "plate" not in got[0]:
        raise HcsNotAPlateError("holds no plate to remove images from", where)
    return ps, got[0], got[1]


# ------------------------------------------------------------------------ plan, then fill


@store_write_errors
def create_plate(store: Any, wells: Mapping[str, int | Sequence[str]] | Sequence[str],
                 template: xr.DataArray, fields: int = 1, levels: int | None = None,
                 labels: Mapping[str, Any] | None = None, acquisition: int | None = None,
                 acquisition_name: str | None = None, ngff_version: str = "0.5",
                 name: str | None = None, mode: str = "w-",
                 chunks: dict[str, int] | None = None,
                 storage_options: dict[str, Any] | None = None) -> list[str]:
    """Write a whole plate's metadata and empty arrays; return the field paths to fill.

    Parameters
    ----------
    store
        Where to write the plate.
    wells
        Well paths (``["B/03", ...]``, each with ``fields`` fields), or ``{well: n_fields}``
        or ``{well: [field paths]}``.
    template
        What every field looks like: dims, shape, dtype, coordinates and channel labels
        (its values are not written).
    fields, levels, labels, acquisition, acquisition_name, ngff_version, name, chunks
        As for :func:`add_image`; ``labels`` maps label names to dtypes or templates.
    mode
        ``"w-"`` fails if ``store`` holds data, ``"w"`` replaces it.

    Returns
    -------
    list of str
        The field paths, for :func:`write_field`.
    """
    import dask.array as da

    layout: dict[str, list[str]] = {}
    items = wells.items() if isinstance(wells, Mapping) else ((w, fields) for w in wells)
    for w, f in items:
        layout[str(w)] = [str(i) for i in range(f)] if isinstance(f, int) else [str(x) for x
                                                                                  in f]
    zeros = xr.DataArray(da.zeros(template.shape, dtype=template.dtype,
                                  chunks=template.shape), dims=template.dims,
                         coords=template.coords)
    label_templates = None
    if labels:
        yx = zeros.isel({d: 0 for d in zeros.dims if d in ("c", "t")}, drop=True)
        label_templates = {n: (v if isinstance(v, xr.DataArray) else
                               xr.zeros_like(yx, dtype=np.dtype(v)))
                           for n, v in labels.items()}
    plate_ome: dict[str, Any] = {"version": ngff_version, "plate": {
        "rows": [], "columns": [], "wells": [], **({"name": name} if name else {})}}
    nodes: dict[str, NodeSpec | None] = {}
    proto: dict[str, NodeSpec] | None = None
    out = []
    for wpath, fpaths in layout.items():
        row, col = wpath.split("/")
        well_ome = None
        for fp in fpaths:
            plate_ome, well_ome, fp, acq = plate_with_image(
                plate_ome, well_ome, row, col, fp, acquisition, acquisition_name)
            col = column_name(Plate.from_dict(plate_ome["plate"]), col)
            full = f"{row}/{col}/{fp}"
            if proto is None:
                proto = field_nodes("F", zeros, levels, acq, ngff_version, label_templates)
            for rel, spec in proto.items():  # each node owns its dicts (see NodeSpec)
                clone = NodeSpec(dict(spec.data_vars), dict(spec.coord_vars),
                                 dict(spec.indexes), copy.deepcopy(spec.attrs),
                                 dict(spec.encoding))
                if rel == "F":
                    clone.attrs["ome"]["multiscales"][0]["name"] = full.replace("/", "_")
                nodes[full + rel[1:]] = clone
            out.append(full)
        nodes[f"{row}/{col}"] = NodeSpec(attrs={"ome": well_ome})
        nodes.setdefault(row, NodeSpec())
    nodes[""] = NodeSpec(attrs={"ome": plate_ome})
    write_plate(assemble_tree(nodes), store, ngff_version=ngff_version, mode=mode,
                chunks=chunks, pixels=False, storage_options=storage_options)
    return out


@store_write_errors
def write_field(store: Any, field: str, image: Any, labels: Mapping[str, Any] | None = None,
                compute: bool = True, storage_options: dict[str, Any] | None = None) -> Any:
    """Write the pixels of one planned field (all its levels) into its existing arrays.

    Touches no metadata, so any number of workers may fill different fields at once.
    Returns None, or with ``compute=False`` the dask graph of the writes.

    Raises
    ------
    HcsNotFoundError
        The field (or a label) was not planned.
    HcsMetadataError
        The image's shape or dtype differs from the plan.
    """
    import dask
    import dask.array as da

    from .arrays import ZarrLevelArray

    target = open_writable(store, storage_options)
    ps = _reader(target)
    if ps is None:
        raise HcsNotFoundError("holds no plate", str(store))
    sources, targets = [], []

    def plan(path: str, img: Any, label: bool) -> None:
        got = _read(ps, path, None)
        if got is None or not got[0].get("multiscales"):
            raise HcsNotFoundError("is not a planned image of the plate", ps.where(path))
        datasets = got[0]["multiscales"][0]["datasets"]
        pyramid, _ = image_levels(img, len(datasets), label=label)
        for d, lv in zip(datasets, pyramid, strict=True):
            info = run_sync(ps.array_info(join_path(path, d["path"])))
            if info is None:
                raise HcsNotFoundError("planned array is missing",
                                       ps.where(join_path(path, d["path"])))
            if tuple(lv.shape) != info.shape or lv.dtype != info.dtype:
                raise HcsMetadataError(
                    f"image level {d['path']} has shape {tuple(lv.shape)} {lv.dtype}, the plan "
                    f"has {info.shape} {info.dtype}", ps.where(path))
            sources.append(lv.data.rechunk(info.chunks))
            targets.append(ZarrLevelArray(ps, info).array)

    plan(field, image, False)
    for lname, lab in (labels or {}).items():
        plan(join_path(field, "labels", lname), lab, True)
    stored = da.store(sources, targets, lock=False, compute=False)
    if not compute:
        return stored
    dask.compute(stored)
    return None
