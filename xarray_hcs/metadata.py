"""DataTree → OME-NGFF metadata: what a tree says about itself, in the version-neutral form.

The writer needs, for every node of a plate tree, the metadata that describes exactly what the
tree holds: the plate lists the wells present, wells list the fields present, multiscales list
the levels present with scale and translation taken from the coordinates (the source of truth:
a sliced level is written at its sliced position), omero channel labels from the ``c``
coordinate. Unknown keys of the original metadata are kept. Pure: xarray in, dicts out.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ._xarray_internals import node_coord, node_data_var
from .errors import HcsMetadataError
from .ngff import Multiscale, Plate, Well, check_relative_path
from .label_pyramid import complete_label_levels
from .ngff.omero import complete_omero
from .tables import TABLES, TableMeta

__all__ = ["LevelSpec", "ImageSpec", "WellSpec", "PlateSpec", "plate_spec"]


@dataclass
class LevelSpec:
    path: str  # relative to the image
    variable: xr.Variable  # dims in axis order (squeezed axes restored)
    scale: list[float]
    translation: list[float]
    chunks: tuple[int, ...] | None
    fill: Any = None  # the source array's fill value, kept on write (None: zarr's default)


@dataclass
class ImageSpec:
    path: str  # relative to the plate root
    ome: dict[str, Any]  # neutral ome dict, multiscales/omero rewritten
    other: dict[str, Any]
    levels: list[LevelSpec]
    labels_ome: dict[str, Any] | None = None  # the labels group, for field images
    labels_other: dict[str, Any] = field(default_factory=dict)
    labels: list[ImageSpec] = field(default_factory=list)
    tables: TablesSpec | None = None


@dataclass
class TablesSpec:
    """A ``tables`` group to write: its attributes and each table's metadata and rows."""

    path: str  # the tables group, relative to the plate root
    attrs: dict[str, Any]  # the group's attributes but the list of names
    tables: list[tuple[str, TableMeta, Any]]  # (name, meta, DataFrame or TableSource)


@dataclass
class WellSpec:
    path: str
    ome: dict[str, Any]
    other: dict[str, Any]
    fields: list[ImageSpec]


@dataclass
class PlateSpec:
    ome: dict[str, Any]
    other: dict[str, Any]
    rows: dict[str, dict[str, Any]]
    wells: list[WellSpec]
    tables: TablesSpec | None = None

    def images(self) -> Iterator[ImageSpec]:
        for w in self.wells:
            for f in w.fields:
                yield f
                yield from f.labels

    def table_groups(self) -> list[TablesSpec]:
        """Every ``tables`` group to write: the fields', then the plate's."""
        groups = [f.tables for w in self.wells for f in w.fields if f.tables is not None]
        return groups + ([self.tables] if self.tables is not None else [])


def _split(attrs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ome = copy.deepcopy(attrs.get("ome", {}))
    other = {k: copy.deepcopy(v) for k, v in attrs.items() if k not in ("ome", "acquisition")}
    return ome, other


def coord_transform(level: xr.DataTree, dim: str, n: int, fallback: tuple[float, float]
                     ) -> tuple[float, float]:
    """(scale, translation) of ``dim`` from the level's coordinate, or ``fallback``."""
    found = node_coord(level, dim)
    if found is None:
        return fallback
    var, idx = found
    tr = getattr(idx, "transform", None)
    if tr is not None and hasattr(tr, "step") and hasattr(tr, "start"):
        if n > 1 and not float(tr.step) > 0:
            raise HcsMetadataError(
                f"coordinate {dim!r} decreases (a reversed selection?): OME-NGFF scales are "
                "positive, so it cannot be written; reverse it back or sort it first",
                level.path)
        return float(tr.step), float(tr.start)
    values = np.asarray(var.values, dtype=np.float64)
    if values.ndim != 1 or len(values) != n:
        return fallback
    if n == 1:
        return fallback[0], float(values[0])
    from ._pixel_index import grid_of

    grid = grid_of(values)
    if grid is None or not grid[1] > 0:
        raise HcsMetadataError(f"coordinate {dim!r} is not evenly spaced and increasing, so it "
                               "cannot be written as scale + translation", level.path)
    return grid[1], grid[0]


def node_at(tree: xr.DataTree, path: str) -> xr.DataTree | None:
    """``tree[path]`` for a relative node path, by the children mappings (no path parsing);
    None if there is no such node."""
    node: xr.DataTree | None = tree
    for part in path.strip("/").split("/"):
        if part:
            node = node.children.get(part)
            if node is None:
                return None
    return node


def _node(tree: xr.DataTree, path: str) -> xr.DataTree:
    node = node_at(tree, path)
    if node is None:
        raise KeyError(path)
    return node


def _image_spec(tree: xr.DataTree, path: str, var_name: str) -> ImageSpec:
    node = _node(tree, path)
    ome, other = _split(node.attrs)
    ms_list = ome.get("multiscales")
    if not isinstance(ms_list, list) or not ms_list:
        raise HcsMetadataError("image node has no multiscales metadata to write", node.path)
    ms = Multiscale.from_dict(ms_list[0], node.path)
    axes = ms.axis_names
    levels: list[LevelSpec] = []
    datasets = []
    for lv in ms.datasets:
        try:
            lnode = _node(node, lv.path)
        except KeyError:
            continue  # a level left out (selection): not written, not listed
        var = node_data_var(lnode, var_name)
        if var is None:
            raise HcsMetadataError(f"level {lv.path!r} has no {var_name!r} variable",
                                   f"{node.path}/{lv.path}")
        squeezed = var.encoding.get("ome_squeezed") or {}
        fill = var.encoding.get("fill_value")
        if fill is None:  # a level computed anew: the image's stored one
            fill = (node.encoding.get("fill_values") or {}).get(lv.path)
        for name in axes:
            if name not in var.dims and name in squeezed:
                var = var.expand_dims(name)
        if set(var.dims) != set(axes):
            raise HcsMetadataError(f"variable dims {var.dims} do not match the axes "
                                   f"{list(axes)}", f"{node.path}/{lv.path}")
        var = var.transpose(*axes)
        scale0, trans0 = ms.effective(lv)
        scale, trans = [], []
        for i, (name, ax) in enumerate(zip(axes, ms.axes, strict=True)):
            if ax.type in ("space", "time") or (ax.type is None and name.lower() in "tzyx"):
                s, t = coord_transform(lnode, name, var.shape[i], (scale0[i], trans0[i]))
            else:  # channel and custom axes have no physical coordinate
                s, t = scale0[i], trans0[i]
            scale.append(s)
            trans.append(t)
        chunks = var.encoding.get("chunks")
        if chunks is not None and len(chunks) != var.ndim:
            chunks = None
        levels.append(LevelSpec(lv.path, var, scale, trans, chunks, fill))
        # keep the original's form: a multiscales-level transform stays outside, a
        # translation that was written (even zero) is written again
        w_scale, w_trans = list(scale), list(trans)
        if ms.scale is not None:
            outer_t = ms.translation or (0.0,) * len(axes)
            w_scale = [a / b for a, b in zip(scale, ms.scale, strict=True)]
            w_trans = [(a - t) / b for a, t, b in zip(trans, outer_t, ms.scale, strict=True)]
        ds_entry = {k: copy.deepcopy(v) for k, v in lv.extra.items()}
        cts: list[dict[str, Any]] = [{"type": "scale", "scale": w_scale}]
        if any(w_trans) or lv.translation is not None:
            cts.append({"type": "translation", "translation": w_trans})
        datasets.append({"path": lv.path, "coordinateTransformations": cts, **ds_entry})
    if not levels:
        raise HcsMetadataError("image has no level left to write", node.path)
    dtypes = {str(lv.variable.dtype) for lv in levels}
    if len(dtypes) > 1:
        raise HcsMetadataError(f"levels have different dtypes {sorted(dtypes)}: all levels of "
                               "an image must share one", node.path)
    for a, b in zip(levels, levels[1:], strict=False):
        if any(nb > na for na, nb in zip(a.variable.shape, b.variable.shape, strict=True)):
            raise HcsMetadataError(f"level {b.path!r} {b.variable.shape} is larger than level "
                                   f"{a.path!r} {a.variable.shape}", node.path)
    new_ms = {k: v for k, v in ms_list[0].items() if k not in ("datasets", "version")}
    new_ms["datasets"] = datasets
    ome["multiscales"] = [new_ms, *ms_list[1:]]
    # channel labels follow the c coordinate
    chan = [a.name for a in ms.axes if a.type == "channel"]
    chan_coord = node_coord(node, chan[0]) if chan else None
    if chan_coord is not None and isinstance(ome.get("omero"), dict):
        labels = [str(v) for v in chan_coord[0].values]
        chans = ome["omero"].get("channels", [])
        if len(chans) == len(labels):
            for ch, lab in zip(chans, labels, strict=True):
                if isinstance(ch, dict) and ch.get("label") != lab and not (
                        ch.get("label") in (None, "") and lab.startswith("c")):
                    ch["label"] = lab
    if "omero" in ome:  # what the schemas and the peers' readers require, completed
        n = levels[0].variable.shape[list(axes).index(chan[0])] if chan else 0
        ome["omero"] = complete_omero(ome["omero"], levels[0].variable.dtype, n)
    spec = ImageSpec(path.strip("/"), ome, other, levels)
    return spec


def plate_spec(tree: xr.DataTree) -> PlateSpec:
    """Everything to write for ``tree`` (a plate tree), consistent with what it holds."""
    ome, other = _split(tree.attrs)
    if "plate" not in ome:
        raise HcsMetadataError("the tree's root holds no plate metadata", "/")
    plate = Plate.from_dict(ome["plate"], "/")
    present = []
    for w in plate.wells:
        r, c = w.path.split("/")
        if r in tree.children and c in tree[r].children:
            present.append(w.path)
    for r, rnode in tree.children.items():
        if r == TABLES and r not in plate.rows:
            continue  # plate-level tables
        for c in rnode.children:
            if f"{r}/{c}" not in {w.path for w in plate.wells}:
                raise HcsMetadataError(f"well {r}/{c} is in the tree but not in the plate "
                                       "metadata (add wells with .hcs.add_image)", "/")
    wells = []
    for wpath in present:
        wnode = _node(tree, wpath)
        wome, wother = _split(wnode.attrs)
        if "well" not in wome:
            raise HcsMetadataError("well node has no well metadata", f"/{wpath}")
        well = Well.from_dict(wome["well"], f"/{wpath}", plate.acquisition_ids or None)
        fields = []
        kept = []
        for im in well.images:
            if im.path not in wnode.children:
                continue
            fspec = _image_spec(tree, f"{wpath}/{im.path}", "image")
            _label_specs(tree, fspec)
            fspec.tables = _tables_spec(_node(tree, fspec.path), fspec.path)
            fields.append(fspec)
            kept.append(im.to_dict())
        wome["well"] = {**{k: v for k, v in wome["well"].items() if k != "images"},
                        "images": kept}
        wells.append(WellSpec(wpath, wome, wother, fields))
    ome["plate"] = {**ome["plate"], "wells": [w.to_dict() for w in plate.wells
                                              if w.path in set(present)]}
    rows = {}
    for r in dict.fromkeys(p.split("/")[0] for p in present):
        rows[r] = {k: copy.deepcopy(v) for k, v in tree[r].attrs.items()}
    plate_tables = _tables_spec(tree, "") if TABLES not in plate.rows else None
    return PlateSpec(ome, other, rows, wells, plate_tables)


def _tables_spec(node: xr.DataTree, path: str) -> TablesSpec | None:
    """The tables below ``node`` (an image or the plate), checked now, before any write."""
    from .plate_tables import table_nodes

    tnode = node.children.get(TABLES)
    if tnode is None:
        return None
    tpath = f"{path}/{TABLES}" if path else TABLES
    attrs = {k: copy.deepcopy(v) for k, v in tnode.attrs.items() if k != TABLES}
    tables = []
    for name, n in table_nodes(node).items():
        check_relative_path(name, "table name", f"/{tpath}")
        meta = TableMeta.from_attrs(dict(n.attrs), f"/{tpath}/{name}")
        held = n.encoding.get("ome_table")
        if held is None:
            raise HcsMetadataError("table node holds no rows", f"/{tpath}/{name}")
        tables.append((name, meta, held))
    return TablesSpec(tpath, attrs, tables)


def _label_specs(tree: xr.DataTree, fspec: ImageSpec) -> None:
    fnode = _node(tree, fspec.path)
    if "labels" not in fnode.children:
        return
    lnode = fnode.children["labels"]
    lome, lother = _split(lnode.attrs)
    names = [n for n in lome.get("labels", []) if n in lnode.children]
    names += [n for n in lnode.children if n not in names]
    for n in names:
        check_relative_path(n, "label name", lnode.path)
        lspec = _image_spec(tree, f"{fspec.path}/labels/{n}", "labels")
        complete_label_levels(fspec, lspec)  # as many levels as the image, as the spec wants
        fspec.labels.append(lspec)
    lome["labels"] = names
    fspec.labels_ome = lome
    fspec.labels_other = lother
