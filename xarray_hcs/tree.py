"""Plate metadata → xarray: walk a plate's metadata concurrently, then build the DataTree.

Two steps with one job each:

1. :func:`read_plate` walks the store (plate → wells → fields → level arrays and labels),
   reading only what the selection asks for, every document once, concurrently, and returns
   :class:`PlateRecord`, plain parsed metadata.
2. :func:`build_nodes` turns a record into ``{path: NodeSpec}``: variables over lazy arrays,
   coordinates from scale + translation, attrs. Identical metadata (the same axes, transforms
   and shapes in every field, as writers produce) is parsed once and its coordinates and
   indexes are shared, not rebuilt per field.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import warnings
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from xarray.core import indexing
from xarray.indexes import PandasIndex, RangeIndex

from . import ngff
from ._pixel_index import GridTransform, PixelIndex
from ._xarray_internals import NodeSpec
from .arrays import ZarrLevelArray, dask_array
from .errors import (
    HcsError,
    HcsMetadataError,
    HcsMetadataWarning,
    HcsMissingWarning,
    HcsNotAPlateError,
    HcsNotFoundError,
    HcsSelectionError,
    HcsTypeError,
    HcsValueError,
)
from .ngff import Multiscale, Omero, Plate, ScaleLevel, Well, validate
from .ngff.omero import MADE_UP
from .store import ArrayInfo, PlateStore, join_path

__all__ = ["OpenOptions", "PlateRecord", "read_plate", "build_nodes", "select_wells",
           "IMAGE_VAR", "LABEL_VAR", "gc_paused"]

IMAGE_VAR = "image"
#: at most this many channels in an image (their labels are made when the tree is built)
MAX_CHANNELS = 2**16
#: coordinates of axes up to this long are computed when the tree is built; longer ones lazily
_MATERIALISED = 2**20
LABEL_VAR = "labels"
OnMissing = Literal["raise", "warn"]


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class OpenOptions:
    """What to read from a plate and how to present it (see ``open_datatree``)."""

    acquisition: int | str | None = None
    wells: Sequence[Any] | None = None
    fields: Sequence[Any] | None = None
    levels: Sequence[int | str] | None = None
    labels: bool | Sequence[str] = True
    chunks: Any = None
    validate: bool = False
    on_missing: OnMissing = "raise"
    tables: bool = True

    def __post_init__(self) -> None:
        if self.on_missing not in ("raise", "warn"):
            raise HcsValueError(f"on_missing must be 'raise' or 'warn', got "
                                f"{self.on_missing!r}")
        for name in ("validate", "tables"):
            if not isinstance(getattr(self, name), bool):
                raise HcsTypeError(f"{name} must be True or False, got "
                                   f"{getattr(self, name)!r}")
        for name in ("wells", "fields", "levels"):
            v = getattr(self, name)
            if isinstance(v, str | int) and not isinstance(v, bool):
                object.__setattr__(self, name, [v])
            elif v is not None and (isinstance(v, bool) or not isinstance(v, Sequence | tuple)
                                    or isinstance(v, bytes)):
                raise HcsTypeError(f"{name} must be a list (or one name), got {v!r}")
            elif v is not None and len(v) == 0:
                raise HcsValueError(f"{name}=[] selects nothing: leave it out to keep every "
                                    f"one, or name at least one")
        if isinstance(self.labels, str):
            object.__setattr__(self, "labels", [self.labels])
        labels = self.labels
        if not isinstance(labels, bool) and not (
                isinstance(labels, Sequence) and all(isinstance(x, str) for x in labels)):
            raise HcsTypeError(f"labels must be True, False or a list of label names, got "
                               f"{labels!r}")
        if not isinstance(labels, bool) and len(labels) == 0:
            raise HcsValueError("labels=[] selects no label image: pass labels=False")


# ----------------------------------------------------------------------------- records


@dataclass(slots=True, repr=False)
class LevelRecord:
    level: ScaleLevel
    info: ArrayInfo


@dataclass(slots=True, repr=False)
class ImageRecord:
    """A field image or a label image: its metadata and the level arrays read."""

    path: str  # relative to the plate root
    ome: dict[str, Any]
    other: dict[str, Any]
    multiscale: Multiscale
    levels: list[LevelRecord]
    acquisition: int | None = None
    labels_group: tuple[dict[str, Any], dict[str, Any]] | None = None  # (ome, other) of labels/
    labels: list[ImageRecord] = field(default_factory=list)
    tables: TablesRecord | None = None


@dataclass(slots=True, repr=False)
class TablesRecord:
    """A ``tables`` group: its attributes and, per listed table present, the table's."""

    path: str  # the tables group, relative to the plate root
    attrs: dict[str, Any]
    tables: list[tuple[str, dict[str, Any]]]


@dataclass(slots=True, repr=False)
class WellRecord:
    path: str
    ome: dict[str, Any]
    other: dict[str, Any]
    well: Well
    fields: list[ImageRecord]


@dataclass(slots=True, repr=False)
class PlateRecord:
    version: str
    zarr_format: int
    ome: dict[str, Any]
    other: dict[str, Any]
    plate: Plate  # as selected: lists exactly the wells read
    rows: dict[str, dict[str, Any]]  # row name → attrs of the row group (often empty)
    wells: list[WellRecord]
    tables: TablesRecord | None = None


# ----------------------------------------------------------------------------- selection


def _norm_column(c: str) -> str:
    return (c.lstrip("0") or "0") if c.isdigit() else c.upper()


def _split_well(spec: Any) -> tuple[str, str]:
    if isinstance(spec, tuple | list) and len(spec) == 2:
        return str(spec[0]), str(spec[1])
    if isinstance(spec, str):
        if "/" in spec:
            r, _, c = spec.partition("/")
            return r, c
        m = re.fullmatch(r"([A-Za-z]+)[_-]?(\d+)", spec)
        if m:
            return m.group(1), m.group(2)
    raise HcsSelectionError(f"cannot read {spec!r} as a well: use 'B/03', 'B03' or ('B', '03')")


def _inside_plate_hint(source: str) -> str:
    """How to open a node inside a local plate: the plate, and ``group=`` the node."""
    import os

    if "://" in source and not source.startswith("file://"):
        return ("; to open a node of a plate, open the plate's root with group='row/column/"
                "field'")
    path = os.path.abspath(source.removeprefix("file://"))
    parts: list[str] = []
    for _ in range(4):  # a level is at most 3 below the plate: row/column/field/level
        path, name = os.path.split(path)
        if not name:
            break
        parts.insert(0, name)
        for doc in ("zarr.json", ".zattrs"):
            try:
                with open(os.path.join(path, doc), "rb") as f:
                    raw = f.read(MAX_HINT_BYTES)
            except OSError:
                continue
            if b'"plate"' in raw:
                group = "/".join(parts)
                return (f"; it is part of the plate at {path!r}: open that, "
                        f"xr.open_datatree({path!r}, engine='ome-hcs', group={group!r}), "
                        f"or take dt[{group!r}] of the whole plate")
    return ""


#: how much of a parent's document the hint reads
MAX_HINT_BYTES = 1 << 20


def select_wells(plate: Plate, wells: Sequence[Any] | None, path: str | None = None
                 ) -> list[ngff.PlateWell]:
    """The plate's wells named by ``wells`` (in plate order); all wells when None.

    Well names match exactly or up to case and the zero padding of the column ("B3" finds
    "B/03"). A name that matches no well raises :class:`HcsSelectionError`.
    """
    if wells is None:
        return list(plate.wells)
    exact = {w.path: w for w in plate.wells}
    loose = {(w.row.upper(), _norm_column(w.column)): w for w in plate.wells}
    chosen: set[str] = set()
    for spec in wells:
        r, c = _split_well(spec)
        w = exact.get(f"{r}/{c}") or loose.get((r.upper(), _norm_column(c)))
        if w is None:
            some = ", ".join(list(exact)[:8])
            raise HcsSelectionError(f"the plate has no well {spec!r} (it has {len(exact)} "
                                    f"wells: {some}{', ...' if len(exact) > 8 else ''})", path)
        chosen.add(w.path)
    return [w for w in plate.wells if w.path in chosen]


def resolve_acquisition(plate: Plate, acquisition: int | str | None, path: str | None
                        ) -> int | None:
    """The acquisition id named by ``acquisition`` (an id, or a name); None for all."""
    if acquisition is None:
        return None
    for a in plate.acquisitions:
        if a.id == acquisition or (isinstance(acquisition, str) and a.name == acquisition):
            return a.id
    if isinstance(acquisition, int) and not plate.acquisitions:
        return acquisition  # plates without an acquisitions list still tag images
    known = [(a.id, a.name) for a in plate.acquisitions]
    raise HcsSelectionError(f"the plate has no acquisition {acquisition!r} (it has {known})",
                            path)


def select_images(well: Well, acquisition: int | None, fields: Sequence[Any] | None
                  ) -> list[ngff.WellImage]:
    images = [im for im in well.images if acquisition is None or im.acquisition == acquisition]
    if fields is not None:
        wanted = {str(f) for f in fields}
        images = [im for im in images if im.path in wanted]
    return images


def check_fields_exist(fields: Sequence[Any], wells: Sequence[dict[str, Any]],
                       where: str) -> None:
    """Refuse field names that no selected well holds (as a well name that matches no well
    is refused): ``fields=[5]`` would otherwise select nothing without a word."""
    have = {str(im.get("path")) for w in wells for im in (w.get("images") or [])
            if isinstance(im, dict)}
    missing = sorted({str(f) for f in fields} - have)
    if missing:
        raise HcsSelectionError(
            f"no selected well holds field(s) {missing} (the fields are "
            f"{sorted(have, key=lambda p: (len(p), p))})", where)


def select_levels(ms: Multiscale, levels: Sequence[int | str] | None, path: str
                  ) -> list[ScaleLevel]:
    if levels is None:
        return list(ms.datasets)
    out: list[ScaleLevel] = []
    paths = [d.path for d in ms.datasets]
    for lv in levels:
        if isinstance(lv, int | np.integer) and not isinstance(lv, bool):
            i = int(lv)
            if not -len(paths) <= i < len(paths):
                raise HcsSelectionError(f"level {i} does not exist (the image has "
                                        f"{len(paths)} levels: {paths})", path)
            d = ms.datasets[i]
        elif isinstance(lv, str) and lv in paths:
            d = ms.datasets[paths.index(lv)]
        else:
            raise HcsSelectionError(f"level {lv!r} does not exist (levels: {paths})", path)
        if d not in out:
            out.append(d)
    return sorted(out, key=lambda d: paths.index(d.path))


# ----------------------------------------------------------------------------- reading


class _Walker:
    """One plate walk: options, store, and caches of identical parsed metadata."""

    def __init__(self, ps: PlateStore, opts: OpenOptions) -> None:
        self.ps = ps
        self.opts = opts
        self.version = "0.4"
        self._all = ps.gather
        self._ms_cache: dict[str, Multiscale] = {}

    def _missing(self, what: str, path: str) -> None:
        full = self.ps.where(path)
        msg = f"{what} is listed in the metadata but absent from the store"
        if self.opts.on_missing == "raise":
            raise HcsNotFoundError(msg + " (pass on_missing='warn' to skip it)", full)
        warnings.warn(f"{full!r}: {msg}; skipped", HcsMissingWarning, stacklevel=6)

    def _strict_version(self, attrs: dict[str, Any], key: str, path: str) -> None:
        if self.opts.validate and not validate.version_stated(attrs, self.ps.zarr_format, key):
            raise HcsMetadataError("does not validate: the OME-NGFF version is not stated "
                                   f"(where the spec puts it for {key!r})",
                                   self.ps.where(path))

    def _decode(self, attrs: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return ngff.decode_attrs(attrs, self.ps.zarr_format, self.ps.where(path),
                                 default_version=self.version)

    def _multiscale(self, ome: dict[str, Any], path: str) -> Multiscale:
        ms_list = ome.get("multiscales")
        full = self.ps.where(path)
        if not isinstance(ms_list, list) or not ms_list:
            raise HcsMetadataError("image has no multiscales metadata", full)
        raw = ms_list[0]
        # fields of one plate share their multiscales but for the name: parse each shape once
        try:
            key = json.dumps({k: v for k, v in raw.items() if k != "name"})
        except (TypeError, ValueError, AttributeError):
            return Multiscale.from_dict(raw, full)  # let the model report what is wrong
        ms = self._ms_cache.get(key)
        if ms is None:
            ms = self._ms_cache[key] = Multiscale.from_dict(raw, full)
        name = raw.get("name")
        if ms.name != name and (name is None or isinstance(name, str)):
            ms = replace(ms, name=name)
        return ms

    async def plate(self) -> PlateRecord:
        ps = self.ps
        attrs = await ps.group_attrs("")
        if attrs is None:
            raise HcsNotAPlateError("is not a zarr group with attributes", ps.source)
        ome, other = ngff.decode_attrs(attrs, ps.zarr_format, ps.source)
        if "plate" not in ome:
            what = ("an OME-Zarr image, not a plate" if "multiscales" in ome
                    else "a well, not a plate" if "well" in ome
                    else "not an OME-Zarr plate (no 'plate' metadata)")
            raise HcsNotAPlateError(f"is {what}{_inside_plate_hint(ps.source)}", ps.source)
        self.version = ome["version"]
        self._strict_version(attrs, "plate", "")
        plate = Plate.from_dict(ome["plate"], ps.source)
        acq = resolve_acquisition(plate, self.opts.acquisition, ps.source)
        wells = select_wells(plate, self.opts.wells, ps.source)
        row_names = list(dict.fromkeys(w.row for w in wells))
        row_attrs, well_recs, tables = await asyncio.gather(
            self._all(*(ps.group_attrs(r) for r in row_names)),
            self._all(*(self.well(w.path, plate, acq) for w in wells)),
            self._tables("") if self.opts.tables else _none())
        kept = [w for w in well_recs if w is not None]
        if not isinstance(self.opts.labels, bool):
            found = {lr.path.rsplit("/", 1)[1] for w in kept for f in w.fields
                     for lr in f.labels}
            missing = sorted(set(self.opts.labels) - found)
            if missing:
                raise HcsSelectionError(f"no selected field has label image(s) {missing}",
                                        ps.source)
        if self.opts.fields is not None:
            check_fields_exist(self.opts.fields, [w.ome["well"] for w in kept], ps.source)
        if self.opts.fields is not None or acq is not None:
            # as sel does: a well with none of the selected fields is not part of the view
            kept = [w for w in kept if w.fields]
            if acq is not None and not kept and well_recs:
                raise HcsSelectionError(f"no selected field belongs to acquisition {acq!r}",
                                        ps.source)
        kept_paths = {w.path for w in kept}
        sel_plate = replace(
            plate,
            wells=tuple(w for w in plate.wells if w.path in kept_paths),
            acquisitions=tuple(a for a in plate.acquisitions if acq is None or a.id == acq))
        if self.opts.fields is not None or acq is not None:
            counts = [len(w.fields) for w in kept]
            if plate.field_count is not None:
                sel_plate = replace(sel_plate, field_count=max(counts, default=0))
        if self.opts.validate:
            validate.check_plate(sel_plate, [(w.path, w.well) for w in kept], ps.source)
        rows = {r: (ngff.decode_attrs(a, ps.zarr_format, r)[1] if a else {})
                for r, a in zip(row_names, row_attrs, strict=True) if r in
                {w.path.split("/")[0] for w in kept}}
        return PlateRecord(self.version, ps.zarr_format, ome, other, sel_plate, rows, kept,
                           tables)

    async def well(self, path: str, plate: Plate, acq: int | None) -> WellRecord | None:
        attrs = await self.ps.group_attrs(path)
        if attrs is None:
            self._missing(f"well {path!r}", path)
            return None
        ome, other = self._decode(attrs, path)
        full = self.ps.where(path)
        if "well" not in ome:
            raise HcsMetadataError("is listed as a well but has no 'well' metadata", full)
        well = Well.from_dict(ome["well"], full, plate.acquisition_ids or None)
        if self.opts.validate:
            self._strict_version(attrs, "well", path)
            validate.check_well(well, plate, full)
        images = select_images(well, acq, self.opts.fields)
        recs = await self._all(*(self.image(join_path(path, im.path), im.acquisition)
                                 for im in images))
        fields = [r for r in recs if r is not None]
        kept = {r.path.rsplit("/", 1)[1] for r in fields}
        sel_well = replace(well, images=tuple(im for im in images if im.path in kept))
        return WellRecord(path, ome, other, sel_well, fields)

    async def image(self, path: str, acquisition: int | None, *, label: bool = False,
                    like: tuple[int, list[int]] | None = None) -> ImageRecord | None:
        """A field (or, ``label=True``, a label image) and what it holds. ``like`` is the
        level selection of a label's image (its level count, the indices kept): a label
        with as many levels keeps the same ones, so that the two stay level for level."""
        what = "label image" if label else "field"
        attrs = await self.ps.group_attrs(path)
        if attrs is None:
            self._missing(f"{what} {path!r}", path)
            return None
        ome, other = self._decode(attrs, path)
        ms = self._multiscale(ome, path)
        if not label:
            levels = select_levels(ms, self.opts.levels, self.ps.where(path))
        elif like is not None and like[0] == len(ms.datasets):
            levels = [ms.datasets[i] for i in like[1]]
        else:
            levels = list(ms.datasets)
        want_labels = not label and self.opts.labels is not False
        # skipping what is missing must skip the same fields whatever levels are read (the
        # stacked view of one level must match the same level of the whole tree): so the
        # levels not read are looked for too, where missing ones are skipped
        unread = ([lv for lv in ms.datasets if lv not in levels]
                  if self.opts.on_missing == "warn" and not label else [])
        infos, labels_group, tables, others = await self._all(
            self._all(*(self.ps.array_info(join_path(path, lv.path)) for lv in levels)),
            self._labels_group(path, ome) if want_labels else _none(),
            self._tables(path) if self.opts.tables and not label else _none(),
            self._all(*(self.ps.array_info(join_path(path, lv.path)) for lv in unread)))
        for lv, info in zip(unread, others, strict=True):
            if info is None:
                self._missing(f"level array {lv.path!r} of {what} {path!r}",
                              join_path(path, lv.path))
                return None
        recs = []
        for lv, info in zip(levels, infos, strict=True):
            if info is None:
                self._missing(f"level array {lv.path!r} of {what} {path!r}",
                              join_path(path, lv.path))
                return None
            recs.append(LevelRecord(lv, info))
        _check_levels(ms, recs, self.ps.where(path))
        if self.opts.validate:
            self._strict_version(attrs, "multiscales", path)
            om = ome.get("omero")
            validate.check_image(ms, Omero.from_dict(om, path) if om is not None else None,
                                 [r.info.shape for r in recs], [r.info.dtype for r in recs],
                                 self.ps.where(path), label=label)
        rec = ImageRecord(path, ome, other, ms, recs, acquisition, tables=tables)
        if labels_group is not None:
            rec.labels_group = labels_group[0]
            names = labels_group[1]
            if isinstance(self.opts.labels, Sequence) and not isinstance(self.opts.labels, bool):
                names = [n for n in names if n in set(self.opts.labels)]
            kept = (len(ms.datasets), [ms.datasets.index(lv) for lv in levels])
            lrecs = await self._all(*(self.image(join_path(path, "labels", n), None,
                                                 label=True, like=kept) for n in names))
            rec.labels = [r for r in lrecs if r is not None]
        return rec

    async def _labels_group(self, path: str, ome: dict[str, Any]
                            ) -> tuple[tuple[dict[str, Any], dict[str, Any]] | None, list[str]
                                       ] | None:
        lpath = join_path(path, "labels")
        attrs = await self.ps.group_attrs(lpath)
        group: tuple[dict[str, Any], dict[str, Any]] | None = None
        names: tuple[str, ...] = ()
        if attrs is not None:
            group = self._decode(attrs, lpath)
            self._strict_version(attrs, "labels", lpath)
            names = ngff.parse_labels_list(group[0].get("labels", []),
                                           self.ps.where(lpath))
        if not names and "labels" in ome:
            # iohub lists labels in the image group's own attributes, as
            # {"labels": {"labels": [...]}}, and leaves the labels group's attrs empty
            listed = ome["labels"]
            if isinstance(listed, dict):
                listed = listed.get("labels", [])
            names = tuple(n.removeprefix("labels/") for n in ngff.parse_labels_list(
                listed, self.ps.where(path)))
        if group is None and not names:
            return None
        return group, list(names)

    async def _tables(self, path: str) -> TablesRecord | None:
        """The ``tables`` group of an image (or of the plate, ``path=""``), if it has one.

        Only the group documents are read here; the rows are read when asked for.
        """
        from .tables import TABLES, TableMeta, parse_tables_list

        tpath = join_path(path, TABLES)
        attrs = await self.ps.group_attrs(tpath)
        if attrs is None:
            return None
        # an empty group lists no tables (ngio creates them so); otherwise the list must be good
        names = parse_tables_list(attrs, self.ps.where(tpath)) if attrs else []
        docs = await self._all(*(self.ps.group_attrs(join_path(tpath, n)) for n in names))
        tables = []
        for n, a in zip(names, docs, strict=True):
            if a is None:
                self._missing(f"table {n!r}", join_path(tpath, n))
                continue
            TableMeta.from_attrs(a, self.ps.where(join_path(tpath, n)))
            tables.append((n, a))
        return TablesRecord(tpath, attrs, tables)


async def _none() -> None:
    return None


def _check_levels(ms: Multiscale, recs: list[LevelRecord], path: str) -> None:
    ndim = len(ms.axes)
    dtype = None
    for r in recs:
        if len(r.info.shape) != ndim:
            raise HcsMetadataError(
                f"level {r.level.path!r} has {len(r.info.shape)} dimensions but the multiscales "
                f"declare {ndim} axes {list(ms.axis_names)}", path)
        if dtype is None:
            dtype = r.info.dtype
        elif r.info.dtype != dtype:
            raise HcsMetadataError(
                f"level {r.level.path!r} has dtype {r.info.dtype}, level "
                f"{recs[0].level.path!r} has {dtype}: all levels must share one dtype", path)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic structures.

    Opening a plate allocates hundreds of thousands of small objects (parsed JSON, records,
    variables) and keeps them all; each allocation burst triggers a collection that scans
    everything kept so far, which doubled the open time of a 10,000-array plate. They hold no
    reference cycles worth collecting, so one pass afterwards (as usual) is enough.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_plate(ps: PlateStore, opts: OpenOptions) -> PlateRecord:
    """Walk the plate's metadata (concurrently) and return what the selection asks for."""
    from .store import read_error, run_sync

    try:
        return run_sync(_Walker(ps, opts).plate())
    except HcsError:
        raise
    except OSError as e:  # local reads: permissions, I/O errors
        raise read_error(e, ps.source) from e


# ----------------------------------------------------------------------------- building

_AXIS_LETTERS = {"x": "X", "y": "Y", "z": "Z"}


def _cf_axis(axis: ngff.Axis) -> str | None:
    if axis.type == "time" or (axis.type is None and axis.name.lower() == "t"):
        return "T"
    if axis.type in ("space", None):
        return _AXIS_LETTERS.get(axis.name.lower())
    return None


def _is_channel(axis: ngff.Axis) -> bool:
    return axis.type == "channel" or (axis.type is None and axis.name.lower() == "c")


class _Builder:
    """Turns records into NodeSpecs, sharing identical coordinates and indexes."""

    def __init__(self, ps: PlateStore, opts: OpenOptions) -> None:
        self.ps = ps
        self.opts = opts
        self._range: dict[tuple[Any, ...], tuple[RangeIndex, Any]] = {}
        self._chan: dict[tuple[Hashable, tuple[str, ...]], PandasIndex] = {}
        self._omero_cache: dict[int, tuple[Any, Omero]] = {}
        #: images whose omero lists another number of channels than they hold
        self.unlabelled: list[tuple[str, int, int]] = []

    # -- coordinates --------------------------------------------------------------------

    def _range_coord(self, axis: ngff.Axis, size: int, start: float, step: float
                     ) -> tuple[RangeIndex, xr.Variable]:
        key = (axis.name, size, start, step)
        hit = self._range.get(key)
        if hit is None:
            index = PixelIndex(GridTransform(start, step, size, axis.name))
            if size <= _MATERIALISED:
                # the values the index computes, materialised once and shared read-only by
                # every node on this grid: cheaper per node than the lazy transform variable
                data = start + np.arange(size, dtype=np.float64) * step
                data.flags.writeable = False
            else:  # a long axis: values computed when asked for, never all at once
                data = index.create_variables()[axis.name]._data
            hit = self._range[key] = (index, data)
        idx, data = hit
        attrs: dict[str, Any] = {}
        cf = _cf_axis(axis)
        if cf:
            attrs["axis"] = cf
        if axis.unit:
            attrs["units"] = axis.unit
        attrs["long_name"] = (f"{axis.name} position" if axis.type == "space" else
                              "time" if cf == "T" else axis.name)
        return idx, xr.Variable((axis.name,), data, attrs, fastpath=True)

    def _channel_coord(self, name: str, labels: list[str]) -> tuple[PandasIndex, xr.Variable]:
        key = (name, tuple(labels))
        idx = self._chan.get(key)
        if idx is None:
            idx = self._chan[key] = PandasIndex(pd.Index(labels, dtype=object), name)
        var = idx.create_variables()[name]
        var.attrs = {"long_name": "channel"}
        return idx, var

    def _omero(self, ome: dict[str, Any], path: str) -> Omero | None:
        raw = ome.get("omero")
        if raw is None:
            return None
        hit = self._omero_cache.get(id(raw))
        if hit is not None and hit[0] is raw:
            return hit[1]
        om = Omero.from_dict(raw, path)
        self._omero_cache[id(raw)] = (raw, om)
        return om

    # -- nodes --------------------------------------------------------------------------

    def _data(self, info: ArrayInfo) -> Any:
        backend = ZarrLevelArray(self.ps, info)
        if self.opts.chunks is None:
            return indexing.LazilyIndexedArray(backend)
        # the document's identity too: an array made anew at the same path is another array
        token = (f"{self.ps.source}\0{self.ps.root}\0{info.path}\0{self.opts.chunks!r}\0"
                 f"{info.stamp}")
        return dask_array(backend, token, self.opts.chunks, label=info.path)

    def image_nodes(self, rec: ImageRecord, out: dict[str, NodeSpec],
                    parent_coords: dict[str, int], *, var_name: str,
                    extra_attrs: dict[str, Any] | None = None) -> None:
        """The image (field or label) node and its level nodes."""
        ms = rec.multiscale
        full = self.ps.where(rec.path)
        axes = ms.axes
        first = rec.levels[0].info.shape if rec.levels else None
        ome = rec.ome
        if len(rec.levels) != len(ms.datasets):  # a level selection: list what is there
            kept = {lr.level.path for lr in rec.levels}
            m0 = dict(ome["multiscales"][0])
            m0["datasets"] = [d for d in m0["datasets"] if d.get("path") in kept]
            ome = {**ome, "multiscales": [m0, *ome["multiscales"][1:]]}
        node = NodeSpec(attrs={"ome": ome, **rec.other, **(extra_attrs or {})})
        fills = {lr.level.path: lr.info.fill_value for lr in rec.levels
                 if lr.info.fill_value is not None}
        if fills:  # kept with the image: a level computed anew still pads and writes with it
            node.encoding["fill_values"] = fills
        # channel and time coordinates live on the image node, shared by all its levels
        shared: dict[str, int] = {}
        squeeze: dict[str, int] = {}
        for i, ax in enumerate(axes):
            if first is None:
                break
            size = first[i]
            if _is_channel(ax):
                if ax.name in parent_coords and parent_coords[ax.name] != size:
                    if size == 1:  # a label with c=1 under a multichannel image
                        squeeze[ax.name] = i
                        continue
                    raise HcsMetadataError(
                        f"axis {ax.name!r} has size {size} but the image it belongs to has "
                        f"{parent_coords[ax.name]}", full)
                if ax.name in parent_coords:
                    continue
                if size > MAX_CHANNELS:
                    raise HcsMetadataError(
                        f"axis {ax.name!r} claims {size} channels, more than the "
                        f"{MAX_CHANNELS} an image may have", full)
                om = self._omero(rec.ome, full)
                if om is not None and om.channels and len(om.channels) != size:
                    # which written label is whose? nobody can tell: none is used
                    self.unlabelled.append((full, len(om.channels), size))
                    om = None
                labels = om.labels(size) if om else [f"c{j}" for j in range(size)]
                idx, var = self._channel_coord(ax.name, labels)
                made_up = [lab for j, lab in enumerate(labels) if om is None or j >= len(
                    om.channels) or om.channels[j].label != lab]
                if made_up:  # names of ours, not the writer's: never matched across fields
                    var.attrs[MADE_UP] = made_up
                node.coord_vars[ax.name] = var
                node.indexes[ax.name] = idx
                shared[ax.name] = size
            elif _cf_axis(ax) == "T":
                if ax.name in parent_coords:
                    if parent_coords[ax.name] != size:
                        raise HcsMetadataError(
                            f"time axis {ax.name!r} has size {size} but the image it belongs "
                            f"to has {parent_coords[ax.name]}", full)
                    continue
                s, t = ms.effective(rec.levels[0].level)
                idx, var = self._range_coord(ax, size, t[i], s[i])
                node.coord_vars[ax.name] = var
                node.indexes[ax.name] = idx
                shared[ax.name] = size
        out[rec.path] = node
        inherited = {**parent_coords, **shared}
        for lr in rec.levels:
            lpath = join_path(rec.path, lr.level.path)
            shape = lr.info.shape
            s, t = ms.effective(lr.level)
            spec = NodeSpec()
            dims: list[str] = []
            for i, ax in enumerate(axes):
                if ax.name in squeeze:
                    continue
                dims.append(ax.name)
                if ax.name in inherited:
                    if inherited[ax.name] != shape[i]:
                        raise HcsMetadataError(
                            f"level {lr.level.path!r} has {shape[i]} along {ax.name!r} but the "
                            f"image has {inherited[ax.name]} (channel and time axes may not be "
                            "downsampled)", full)
                    continue
                if _cf_axis(ax) is not None or ax.type == "space":
                    idx, var = self._range_coord(ax, shape[i], t[i], s[i])
                    spec.coord_vars[ax.name] = var
                    spec.indexes[ax.name] = idx
            data = self._data(lr.info)
            if squeeze:
                key = tuple(0 if i in squeeze.values() else slice(None)
                            for i in range(len(shape)))
                data = data[key] if not isinstance(data, indexing.LazilyIndexedArray) else \
                    indexing.LazilyIndexedArray(data.array, indexing.BasicIndexer(key))
            enc = {
                "chunks": lr.info.read_chunks,  # zarr's chunks (a shard's inner ones)
                "preferred_chunks": dict(zip(dims, _drop(lr.info.chunks, squeeze), strict=True)),
                "dtype": lr.info.dtype,
                "source": self.ps.source,
                "zarr_path": join_path(self.ps.root, lr.info.path),
                "zarr_format": lr.info.zarr_format,
            }
            if lr.info.fill_value is not None:  # kept on write; pads the stacked view
                enc["fill_value"] = lr.info.fill_value
            if squeeze:
                enc["ome_squeezed"] = dict(squeeze)
            spec.data_vars[var_name] = xr.Variable(tuple(dims), data, encoding=enc,
                                                   fastpath=True)
            out[lpath] = spec
        if rec.labels or rec.labels_group is not None:
            lg = rec.labels_group
            # the labels list as the spec puts it, also where a writer (iohub) listed the
            # labels in the image's attributes and left the labels group's empty
            names = [r.path.rsplit("/", 1)[1] for r in rec.labels]
            lome, lother = lg if lg is not None else ({}, {})
            if not isinstance(self.opts.labels, bool):  # a selection: the group lists it
                lome = {**lome, "labels": [n for n in lome.get("labels") or names
                                           if n in names]}
            if not lome.get("labels"):
                lome = {**lome, "version": lome.get("version") or rec.ome.get("version"),
                        "labels": names}
            lattrs = {"ome": lome, **lother}
            out[join_path(rec.path, "labels")] = NodeSpec(attrs=lattrs)
            for lrec in rec.labels:
                self.image_nodes(lrec, out, inherited, var_name=LABEL_VAR)
        if rec.tables is not None:
            self.table_nodes(rec.tables, out)

    def table_nodes(self, rec: TablesRecord, out: dict[str, NodeSpec]) -> None:
        """The tables group and one attrs-only node per table; rows stay in the store."""
        from .tables import TableSource

        out[rec.path] = NodeSpec(attrs=dict(rec.attrs))
        for name, attrs in rec.tables:
            tpath = join_path(rec.path, name)
            out[tpath] = NodeSpec(attrs=dict(attrs),
                                  encoding={"ome_table": TableSource(self.ps, tpath)})


def _drop(t: tuple[int, ...], squeeze: dict[str, int]) -> tuple[int, ...]:
    gone = set(squeeze.values())
    return tuple(v for i, v in enumerate(t) if i not in gone)


def build_nodes(ps: PlateStore, rec: PlateRecord, opts: OpenOptions) -> dict[str, NodeSpec]:
    """``{path: NodeSpec}`` for the whole selected plate: plate, rows, wells, fields, levels."""
    b = _Builder(ps, opts)
    ome = {**rec.ome, "plate": rec.plate.to_dict()}
    out: dict[str, NodeSpec] = {"": NodeSpec(attrs={"ome": ome, **rec.other},
                                             encoding={"source": ps.source,
                                                       "zarr_format": rec.zarr_format})}
    for row, attrs in rec.rows.items():
        out[row] = NodeSpec(attrs=dict(attrs))
    for w in rec.wells:
        w_ome = {**w.ome, "well": w.well.to_dict()}
        out[w.path] = NodeSpec(attrs={"ome": w_ome, **w.other})
        for f in w.fields:
            extra = {"acquisition": f.acquisition} if f.acquisition is not None else None
            b.image_nodes(f, out, {}, var_name=IMAGE_VAR, extra_attrs=extra)
    if rec.tables is not None:
        b.table_nodes(rec.tables, out)
    if b.unlabelled:
        first = b.unlabelled[0]
        warnings.warn(
            f"{len(b.unlabelled)} image(s) list another number of channel labels in their "
            f"omero metadata than they have channels ({first[0]!r}: {first[1]} labels, "
            f"{first[2]} channels): their labels are not used, the channels are called c0, "
            "c1, ... (validate=True refuses such images)", HcsMetadataWarning, stacklevel=4)
    return out
