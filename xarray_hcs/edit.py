"""In-memory plate edits: select part of a tree, add an image. Trees in, new trees out.

Both rebuild the result in one pass from the nodes they keep (sharing their variables, never
copying pixels) and rewrite the plate and well metadata so that it describes exactly what the
new tree holds. Tree-wide xarray operations (``DataTree.filter``, ``sel``, ``copy``) cost
seconds on a plate and drop the plate's attributes; these do not.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ._xarray_internals import NodeSpec, assemble_tree, spec_of
from .errors import (
    HcsMetadataError,
    HcsNotFoundError,
    HcsPathError,
    HcsSelectionError,
    HcsTypeError,
    HcsValueError,
)
from .ngff import Plate, Well, check_name
from .tree import resolve_acquisition, select_images, select_wells

__all__ = ["select", "add_image", "image_levels", "column_name", "AXIS_ORDER"]

AXIS_ORDER = ("t", "c", "z", "y", "x")
_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


# ------------------------------------------------------------------------------ select


def plate_of(tree: xr.DataTree) -> Plate:
    """The plate metadata at the tree's root, typed; ``HcsMetadataError`` if there is none."""
    ome = tree.attrs.get("ome")
    if not isinstance(ome, dict) or "plate" not in ome:
        raise HcsMetadataError("the tree's root holds no plate metadata", "/")
    return Plate.from_dict(ome["plate"], "/")


def select(tree: xr.DataTree, rows: Sequence[str] | None = None,
           columns: Sequence[Any] | None = None, wells: Sequence[Any] | None = None,
           fields: Sequence[Any] | None = None, acquisition: int | str | None = None,
           levels: Sequence[int | str] | None = None,
           without: frozenset[str] = frozenset()) -> xr.DataTree:
    """A new tree with the selected part of ``tree`` (see ``HcsAccessor.sel``), less the
    fields whose full paths are in ``without``."""
    from .tree import gc_paused

    with gc_paused():  # a rebuild allocates like an open (see gc_paused)
        return _select(tree, rows, columns, wells, fields, acquisition, levels, without)


def remove_image(tree: xr.DataTree, row: str, column: Any, field: Any) -> xr.DataTree:
    """A new tree without field ``row``/``column``/``field`` (see ``HcsAccessor``)."""
    plate = plate_of(tree)
    wpath = f"{row}/{column_name(plate, column)}"
    if wpath not in plate.well_paths or not _has(tree, wpath):
        raise HcsNotFoundError(f"the plate holds no well {wpath!r}", "/")
    listed = [im.get("path") for im in tree[wpath].attrs["ome"]["well"].get("images", [])]
    if str(field) not in listed:
        raise HcsNotFoundError(f"well {wpath} lists no field {str(field)!r}", f"/{wpath}")
    return select(tree, without=frozenset({f"{wpath}/{field}"}))


def _select(tree: xr.DataTree, rows: Sequence[str] | None, columns: Sequence[Any] | None,
            wells: Sequence[Any] | None, fields: Sequence[Any] | None,
            acquisition: int | str | None, levels: Sequence[int | str] | None,
            without: frozenset[str] = frozenset()) -> xr.DataTree:
    plate = plate_of(tree)
    present = [w for w in plate.wells
               if w.row in tree.children and w.column in tree[w.row].children]
    chosen = {w.path for w in select_wells(plate, wells, "/")}
    if rows is not None:
        want_rows = {str(r) for r in ([rows] if isinstance(rows, str) else rows)}
        unknown = want_rows - set(plate.rows)
        if unknown:
            raise HcsSelectionError(f"the plate has no rows {sorted(unknown)}", "/")
        chosen = {p for p in chosen if p.split("/")[0] in want_rows}
    if columns is not None:
        cols = [columns] if isinstance(columns, str | int) else list(columns)
        want_cols = {column_name(plate, c) for c in cols}
        unknown = want_cols - set(plate.columns)
        if unknown:
            raise HcsSelectionError(f"the plate has no columns {sorted(unknown)}", "/")
        chosen = {p for p in chosen if p.split("/")[1] in want_cols}
    acq = resolve_acquisition(plate, acquisition, "/")
    field_sel = None if fields is None else (
        [fields] if isinstance(fields, str | int) else list(fields))
    level_sel = None if levels is None else (
        [levels] if isinstance(levels, str | int) else list(levels))
    for name, chosen_sel in (("fields", field_sel), ("levels", level_sel)):
        if chosen_sel is not None and not chosen_sel:
            raise HcsValueError(f"{name}=[] selects nothing: leave it out to keep every one, "
                                "or name at least one")
    if field_sel is not None:
        from .tree import check_fields_exist

        check_fields_exist(field_sel, [
            tree.children[w.row].children[w.column].attrs["ome"]["well"] for w in present
            if w.path in chosen], "/")
    nodes: dict[str, NodeSpec | None] = {}
    kept_wells = []
    for w in present:
        if w.path not in chosen:
            continue
        wnode = tree.children[w.row].children[w.column]
        well = Well.from_dict(wnode.attrs["ome"]["well"], w.path)
        images = [im for im in select_images(well, acq, field_sel)
                  if im.path in wnode.children and f"{w.path}/{im.path}" not in without]
        if not images and (field_sel is not None or acq is not None or without):
            continue
        wspec = spec_of(wnode)
        wspec.attrs = copy.copy(wspec.attrs)
        wspec.attrs["ome"] = {**wspec.attrs["ome"], "well": {
            **wnode.attrs["ome"]["well"], "images": [im.to_dict() for im in images]}}
        nodes[w.path] = wspec
        kept_wells.append((w, len(images)))
        for im in images:
            _copy_field(wnode.children[im.path], f"{w.path}/{im.path}", level_sel, nodes)
    if acq is not None and not kept_wells and present:
        raise HcsSelectionError(f"no selected field belongs to acquisition {acq!r}", "/")
    kept = {w.path for w, _ in kept_wells}
    root = spec_of(tree)
    pl = dict(tree.attrs["ome"]["plate"])
    pl["wells"] = [w.to_dict() for w in plate.wells if w.path in kept]
    if acq is not None:
        pl["acquisitions"] = [a.to_dict() for a in plate.acquisitions if a.id == acq]
    if "field_count" in pl and (field_sel is not None or acq is not None or without):
        pl["field_count"] = max((n for _, n in kept_wells), default=0)
    root.attrs = {**root.attrs, "ome": {**tree.attrs["ome"], "plate": pl}}
    nodes[""] = root
    for r in {p.split("/")[0] for p in kept}:
        nodes[r] = spec_of(tree[r])
    if "tables" in tree.children and "tables" not in plate.rows:  # plate-level tables
        _copy_subtree(tree.children["tables"], "tables", nodes)
    return assemble_tree(nodes)


def _copy_field(fnode: xr.DataTree, fpath: str, levels: Sequence[int | str] | None,
                nodes: dict[str, NodeSpec | None]) -> None:
    from .ngff import Multiscale
    from .tree import select_levels

    if levels is None:  # everything below the field, as it is
        _copy_subtree(fnode, fpath, nodes)
        return
    fspec = spec_of(fnode)
    ms_raw = fnode.attrs["ome"]["multiscales"][0]
    ms = Multiscale.from_dict(ms_raw, fnode.path)
    kept_paths = [d.path for d in select_levels(ms, levels, fnode.path) if _has(fnode, d.path)]
    if levels is not None:
        m0 = {**ms_raw, "datasets": [d for d in ms_raw["datasets"]
                                     if d.get("path") in kept_paths]}
        fspec.attrs = {**fspec.attrs, "ome": {**fspec.attrs["ome"], "multiscales": [
            m0, *fnode.attrs["ome"]["multiscales"][1:]]}}
    nodes[fpath] = fspec
    for lp in kept_paths:
        nodes[f"{fpath}/{lp}"] = spec_of(fnode[lp])
    if "tables" in fnode.children:
        _copy_subtree(fnode.children["tables"], f"{fpath}/tables", nodes)
    if "labels" in fnode.children:
        # a label with as many levels as its image keeps the same ones (as when opening), so
        # that the two stay level for level; any other keeps all of its own
        indices = [i for i, d in enumerate(ms.datasets) if d.path in kept_paths]
        lnode = fnode.children["labels"]
        nodes[f"{fpath}/labels"] = spec_of(lnode)
        for name, label in lnode.children.items():
            _copy_label(label, f"{fpath}/labels/{name}", len(ms.datasets), indices, nodes)


def _copy_label(label: xr.DataTree, path: str, n_image: int, indices: list[int],
                nodes: dict[str, NodeSpec | None]) -> None:
    from .ngff import Multiscale

    raw = (label.attrs.get("ome") or {}).get("multiscales")
    if not isinstance(raw, list) or not raw:
        _copy_subtree(label, path, nodes)
        return
    ms = Multiscale.from_dict(raw[0], label.path)
    if len(ms.datasets) != n_image:
        _copy_subtree(label, path, nodes)
        return
    keep = [ms.datasets[i].path for i in indices]
    spec = spec_of(label)
    m0 = {**raw[0], "datasets": [d for d in raw[0]["datasets"] if d.get("path") in keep]}
    spec.attrs = {**spec.attrs, "ome": {**spec.attrs["ome"], "multiscales": [m0, *raw[1:]]}}
    nodes[path] = spec
    def under(name: str, paths: list[str]) -> bool:
        return any(p == name or p.startswith(name + "/") for p in paths)

    every = [d.path for d in ms.datasets]
    for name, child in label.children.items():
        if under(name, keep) or not under(name, every):
            _copy_subtree(child, f"{path}/{name}", nodes)


def _copy_subtree(node: xr.DataTree, path: str, nodes: dict[str, NodeSpec | None]) -> None:
    nodes[path] = spec_of(node)
    for name, child in node.children.items():
        _copy_subtree(child, f"{path}/{name}", nodes)


def _has(node: xr.DataTree, path: str) -> bool:
    try:
        node[path]
    except KeyError:
        return False
    return True


# ------------------------------------------------------------------------------ add_image


def column_name(plate: Plate, column: Any) -> str:
    """``column`` spelled in the plate's style: "3" or "03" as its columns are written."""
    c = str(column)
    if c in plate.columns:
        return c
    if c.isdigit():
        digits = [x for x in plate.columns if x.isdigit()]
        for existing in digits:
            if int(existing) == int(c):
                return existing
        if not digits:  # no style yet: as given
            return c
        padded = [x for x in digits if x.startswith("0")]
        return str(int(c)).zfill(len(padded[0]) if padded else 0)
    return c


def _sort_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def _row_key(name: str) -> tuple[int, str]:
    return (len(name), name)


def check_labels_arg(labels: Any, where: str | None = None) -> None:
    """Refuse a ``labels`` argument that does not map names to label images."""
    if labels is not None and not isinstance(labels, Mapping):
        raise HcsTypeError(f"labels must map label names to label images ({{'nuclei': "
                           f"lab}}), got {type(labels).__name__}", where)


def check_levels(levels: Any) -> None:
    """Refuse a ``levels`` argument that is not None or an integer >= 1."""
    if levels is not None and (not isinstance(levels, (int, np.integer))
                               or isinstance(levels, bool) or levels < 1):
        raise HcsValueError(f"levels must be an integer >= 1 (or None: as many as the "
                            f"image's size allows), got {levels!r}")


def as_image(image: Any) -> xr.DataArray:
    if isinstance(image, xr.Dataset):
        if "image" not in image.data_vars:
            raise HcsMetadataError(f"a Dataset image needs an 'image' variable, it has "
                                   f"{list(image.data_vars)}")
        image = image["image"]
    if not isinstance(image, xr.DataArray):
        raise HcsTypeError(f"image must be an xarray DataArray (or a Dataset with an "
                           f"'image' variable) with named dims, got {type(image).__name__}")
    unknown = [d for d in image.dims if str(d) not in AXIS_ORDER]
    if unknown:
        raise HcsMetadataError(f"image has dimensions {unknown} that are not among "
                               f"{list(AXIS_ORDER)}")
    if "y" not in image.dims or "x" not in image.dims:
        raise HcsMetadataError(f"image needs y and x dimensions, it has {list(image.dims)}")
    if image.dtype.kind not in "biuf":
        raise HcsMetadataError(f"image dtype {image.dtype} is not numeric")
    return image.transpose(*[d for d in AXIS_ORDER if d in image.dims])


def _spacing(image: xr.DataArray, dim: str) -> tuple[float, float, str | None]:
    """(scale, translation, unit) of ``dim`` from the image's coordinate, if it has one."""
    if dim not in image.coords:
        return 1.0, 0.0, None
    v = np.asarray(image.coords[dim].values, dtype=np.float64)
    unit = image.coords[dim].attrs.get("units")
    index = image.xindexes.get(dim)
    tr = getattr(index, "transform", None)
    if tr is not None and hasattr(tr, "step") and hasattr(tr, "start"):
        # a RangeIndex (an opened plate's coordinates) knows its step, even for one pixel
        return float(tr.step), float(tr.start), unit
    if len(v) < 2:
        return 1.0, float(v[0]) if len(v) else 0.0, unit
    from ._pixel_index import grid_of

    grid = grid_of(v)
    if grid is None or not grid[1] > 0:
        raise HcsMetadataError(f"coordinate {dim!r} is not evenly spaced and increasing")
    return grid[1], grid[0], unit


def image_levels(image: Any, levels: int | None, *, label: bool = False,
                 name: str | None = None) -> tuple[list[xr.DataArray], dict[str, Any]]:
    """The lazy pyramid of ``image`` and its multiscales entry (neutral form).

    Each level halves y and x: the mean of 2 x 2 blocks for images (cast back to the image's
    dtype), every other pixel for labels. Coordinates follow (pixel centres), so scale and
    translation are exact for each level.
    """
    img = as_image(image)
    if not hasattr(img.data, "dask"):  # lazy from here on: levels are computed on write
        img = img.chunk()
    ny, nx = img.sizes["y"], img.sizes["x"]
    if levels is None:
        levels = 1
        while levels < 5 and min(ny, nx) // 2 ** levels >= 64:
            levels += 1
    check_levels(levels)
    if min(ny, nx) // 2 ** (levels - 1) < 1:
        raise HcsMetadataError(f"a {ny} x {nx} image cannot have {levels} levels")
    dims = [str(d) for d in img.dims]
    for d in dims:  # physical coordinates: the given ones, else pixel indices
        if d in ("x", "y", "z", "t") and d not in img.coords:
            img = img.assign_coords({d: np.arange(img.sizes[d], dtype=np.float64)})
    pyramid = [img]
    for _ in range(1, levels):
        prev = pyramid[-1]
        if label:
            nxt = prev.isel(y=slice(0, prev.sizes["y"] // 2 * 2, 2),
                            x=slice(0, prev.sizes["x"] // 2 * 2, 2))
        else:
            nxt = prev.coarsen(y=2, x=2, boundary="trim").mean()
            if np.issubdtype(img.dtype, np.integer):
                nxt = nxt.round()
            nxt = nxt.astype(img.dtype)
        pyramid.append(nxt)
    axes = []
    for d in dims:
        ax: dict[str, Any] = {"name": d, "type": _TYPES[d]}
        unit = img.coords[d].attrs.get("units") if d in img.coords and d != "c" else None
        if unit is None and _TYPES[d] == "space":
            unit = "micrometer"
        if unit is not None and d != "c":
            ax["unit"] = unit
        axes.append(ax)
    datasets = []
    first: tuple[list[float], list[float]] = ([], [])
    for i, lv in enumerate(pyramid):
        scale, trans = [], []
        for k, d in enumerate(dims):
            if d == "c":
                s, t = 1.0, 0.0
            elif i and d not in ("y", "x"):
                # not downsampled: level 0's, which a one-pixel coordinate (z of a 2-D
                # image) may know only from its index, lost by coarsen
                s, t = first[0][k], first[1][k]
            elif i:
                # from level 0's exactly, not from the coarsened coordinates (whose rounding
                # would make this level's grid differ from the sample writer's and the
                # peers' in the last bits): a 2 x 2 mean is centred half a finer pixel on,
                # every other pixel (labels) where it was
                f = 2**i
                s = first[0][k] * f
                t = first[1][k] + (0.0 if label else (f - 1) / 2 * first[0][k])
            else:
                s, t, _ = _spacing(lv, d)
            scale.append(s)
            trans.append(t)
        if not i:
            first = (scale, trans)
        else:  # the level's coordinates: exactly the grid its metadata states
            from ._pixel_index import GridTransform, PixelIndex

            for k, d in enumerate(dims):
                if d in ("y", "x") and d in lv.coords:
                    attrs = dict(lv.coords[d].attrs)
                    grid = xr.Coordinates.from_xindex(PixelIndex(GridTransform(
                        trans[k], scale[k], lv.sizes[d], d)))
                    lv = lv.drop_vars(d).assign_coords(grid)
                    lv.coords[d].attrs.update(attrs)
            pyramid[i] = lv
        cts: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if any(trans):
            cts.append({"type": "translation", "translation": trans})
        datasets.append({"path": str(i), "coordinateTransformations": cts})
    ms = {"axes": axes, "datasets": datasets}
    if name is not None:
        ms["name"] = name
    return pyramid, ms


def _omero(img: xr.DataArray) -> dict[str, Any] | None:
    if "c" not in img.dims:
        return None
    labels = ([str(v) for v in img.coords["c"].values] if "c" in img.coords
              else [f"c{i}" for i in range(img.sizes["c"])])
    colors = ["0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF"]
    info = np.iinfo(img.dtype) if np.issubdtype(img.dtype, np.integer) else None
    lo, hi = (float(info.min), float(info.max)) if info else (0.0, 1.0)
    return {"channels": [{"label": lab, "color": colors[i % len(colors)], "active": True,
                          "window": {"min": lo, "max": hi, "start": lo, "end": hi}}
                         for i, lab in enumerate(labels)]}


def _level_spec(lv: xr.DataArray, var_name: str, shared: set[str]) -> NodeSpec:
    ds = lv.to_dataset(name=var_name)
    ds = ds.drop_vars([c for c in ds.coords if c in shared or c not in ds.dims])
    spec = NodeSpec(data_vars={var_name: ds[var_name].variable})
    for c in ds.coords:
        spec.coord_vars[c] = ds.variables[c]
        if c in ds.xindexes:
            spec.indexes[c] = ds.xindexes[c]
    return spec


def field_nodes(path: str, image: Any, levels: int | None, acquisition: int | None,
                version: str, labels: dict[str, Any] | None = None,
                name: str | None = None) -> dict[str, NodeSpec]:
    """The nodes of one new field (and its label images) at ``path``."""
    pyramid, ms = image_levels(image, levels, name=name)
    img = pyramid[0]
    nodes: dict[str, NodeSpec] = {}
    ome: dict[str, Any] = {"version": version, "multiscales": [ms]}
    om = _omero(img)
    if om is not None:
        ome["omero"] = om
    fattrs: dict[str, Any] = {"ome": ome}
    if acquisition is not None:
        fattrs["acquisition"] = acquisition
    fspec = NodeSpec(attrs=fattrs)
    shared: set[str] = set()
    for d in ("t", "c"):
        if d in img.dims:
            values = (img.coords[d].values if d in img.coords else
                      np.asarray([f"c{i}" for i in range(img.sizes[d])], dtype=object))
            if d == "c":
                values = np.asarray([str(v) for v in values], dtype=object)
            ds = xr.Dataset(coords={d: values})
            fspec.coord_vars[d] = ds.variables[d]
            fspec.indexes[d] = ds.xindexes[d]
            shared.add(d)
    nodes[path] = fspec
    for i, lv in enumerate(pyramid):
        nodes[f"{path}/{i}"] = _level_spec(lv, "image", shared)
    check_labels_arg(labels, path)
    if labels:
        names = []
        for lname, lab in labels.items():
            check_name(lname, "label name", path)
            lab = _on_image_grid(lab, img, lname, path)
            lpyr, lms = image_levels(lab, len(pyramid), label=True, name=lname)
            if np.dtype(lpyr[0].dtype).kind not in "iu":
                raise HcsMetadataError(f"label image {lname!r} must have an integer dtype, "
                                       f"got {lpyr[0].dtype}", path)
            lome = {"version": version, "multiscales": [lms],
                    "image-label": {"source": {"image": "../../"}}}
            nodes[f"{path}/labels/{lname}"] = NodeSpec(attrs={"ome": lome})
            for i, lv in enumerate(lpyr):
                nodes[f"{path}/labels/{lname}/{i}"] = _level_spec(
                    lv.drop_vars([c for c in ("c", "t") if c in lv.coords]), "labels", shared)
            names.append(lname)
        nodes[f"{path}/labels"] = NodeSpec(attrs={"ome": {"version": version,
                                                          "labels": names}})
    return nodes


def _on_image_grid(lab: Any, img: xr.DataArray, name: str, path: str) -> xr.DataArray:
    """A label image on its image's pixel grid: the same z, y, x sizes (else refused: it
    would not overlay the image), and the image's coordinates where it has none of its own
    (a bare array of labels, as segmentation returns it)."""
    lab = as_image(lab)
    for d in ("z", "y", "x"):
        if d not in lab.dims:
            continue
        if d not in img.dims or lab.sizes[d] != img.sizes[d]:
            raise HcsMetadataError(
                f"label image {name!r} has {d} of size {lab.sizes[d]} but its image "
                f"{'has no ' + d if d not in img.dims else 'has ' + str(img.sizes[d])}: a "
                "label image must lie on its image's pixels", path)
        if d not in lab.coords and d in img.coords:
            lab = lab.assign_coords({d: img.coords[d].variable})
    return lab


def plate_with_image(plate_ome: dict[str, Any], well_ome: dict[str, Any] | None, row: str,
                     column: Any, field: str | None, acquisition: int | None,
                     acquisition_name: str | None
                     ) -> tuple[dict[str, Any], dict[str, Any], str, int | None]:
    """(plate ome, well ome, field path, acquisition id) after adding one image."""
    plate = Plate.from_dict(plate_ome["plate"], "/")
    check_name(row, "row name", "/")
    if row == "tables" and row not in plate.rows:
        raise HcsPathError("a row cannot be named 'tables': that is the name of the plate's "
                           "own table group", "/tables")
    col = column_name(plate, column)
    check_name(col, "column name", "/")
    wpath = f"{row}/{col}"
    well = (Well.from_dict(well_ome["well"], wpath) if well_ome is not None
            else Well(images=()))
    if field is None:
        used = {im.path for im in well.images}
        i = 0
        while str(i) in used:
            i += 1
        field = str(i)
    field = str(field)
    if not re.fullmatch(r"[A-Za-z0-9]+", field):
        raise HcsPathError(f"field path {field!r} is not alphanumeric", wpath)
    if field in {im.path for im in well.images}:
        raise HcsMetadataError(f"well {wpath} already has a field {field!r}", wpath)
    acqs = [a.to_dict() for a in plate.acquisitions]
    if acquisition is None and len(plate.acquisitions) == 1:
        acquisition = plate.acquisitions[0].id
    if acquisition is None and len(plate.acquisitions) > 1:
        raise HcsMetadataError(
            f"the plate has {len(plate.acquisitions)} acquisitions "
            f"({list(plate.acquisition_ids)}): pass acquisition= (the spec requires it)", wpath)
    if acquisition is not None and (not isinstance(acquisition, int) or isinstance(
            acquisition, bool) or acquisition < 0):
        raise HcsValueError(f"acquisition must be an integer id >= 0, got {acquisition!r}",
                            wpath)
    if acquisition_name is not None and not isinstance(acquisition_name, str):
        raise HcsValueError(f"acquisition_name must be a string, got {acquisition_name!r}",
                            wpath)
    if acquisition is not None:
        if acquisition not in plate.acquisition_ids:
            entry: dict[str, Any] = {"id": acquisition}
            if acquisition_name is not None:
                entry["name"] = acquisition_name
            acqs.append(entry)
    rows = sorted(set(plate.rows) | {row}, key=_row_key) if row not in plate.rows \
        else list(plate.rows)
    cols = sorted(set(plate.columns) | {col}, key=_sort_key) if col not in plate.columns \
        else list(plate.columns)
    well_paths = [w.path for w in plate.wells]
    if wpath not in well_paths:
        well_paths.append(wpath)
    wells = [{"path": p, "rowIndex": rows.index(p.split("/")[0]),
              "columnIndex": cols.index(p.split("/")[1]),
              **next((w.extra for w in plate.wells if w.path == p), {})}
             for p in sorted(well_paths, key=lambda p: (rows.index(p.split("/")[0]),
                                                        cols.index(p.split("/")[1])))]
    images = [*(im.to_dict() for im in well.images),
              {"path": field, **({"acquisition": acquisition} if acquisition is not None
                                 else {})}]
    new_well = {**(well_ome or {}), "well": {**((well_ome or {}).get("well") or {}),
                                              "images": images}}
    new_well.setdefault("version", plate_ome.get("version"))
    pl = dict(plate_ome["plate"])
    pl.update(rows=[{"name": r} for r in rows], columns=[{"name": c} for c in cols],
              wells=wells)
    if acqs:
        for a in acqs:
            if a["id"] == acquisition and "maximumfieldcount" in a:
                n = sum(1 for im in images if im.get("acquisition") == acquisition)
                a["maximumfieldcount"] = max(a["maximumfieldcount"], n)
        pl["acquisitions"] = acqs
    if "field_count" in pl:
        pl["field_count"] = max(pl["field_count"] or 0, len(images))
    # what is about to be published must be what a reader accepts: checked by the reader's
    # own rules, so that no argument can make the plate unreadable
    try:
        checked = Plate.from_dict(pl, "/")
        Well.from_dict(new_well["well"], wpath, checked.acquisition_ids or None)
    except HcsMetadataError as e:
        raise HcsValueError(f"the image cannot be added: {e.message}", wpath) from None
    return {**plate_ome, "plate": pl}, new_well, field, acquisition


def add_image(tree: xr.DataTree, row: str, column: Any, image: Any, field: str | None = None,
              acquisition: int | None = None, acquisition_name: str | None = None,
              levels: int | None = None, labels: dict[str, Any] | None = None
              ) -> xr.DataTree:
    """A new tree with ``image`` added as a field (see ``HcsAccessor.add_image``)."""
    plate_ome = tree.attrs.get("ome", {})
    if "plate" not in plate_ome:
        raise HcsMetadataError("the tree's root holds no plate metadata", "/")
    plate = Plate.from_dict(plate_ome["plate"], "/")
    col = column_name(plate, column)
    wpath = f"{row}/{col}"
    exists = row in tree.children and col in tree[row].children
    well_ome = tree[wpath].attrs.get("ome") if exists else None
    new_plate, new_well, fpath, acq = plate_with_image(
        plate_ome, well_ome, row, column, field, acquisition, acquisition_name)
    if levels is None:
        first = next(iter(_field_paths(tree)), None)
        if first is not None:
            levels = len(tree[first].attrs["ome"]["multiscales"][0]["datasets"])
    version = plate_ome.get("version") or "0.5"
    nodes: dict[str, NodeSpec | None] = {n.path.lstrip("/"): spec_of(n) for n in tree.subtree}
    root = nodes[""]
    assert root is not None
    root.attrs = {**root.attrs, "ome": new_plate}
    if row not in tree.children:
        nodes[row] = NodeSpec()
    wspec = nodes.get(wpath) or NodeSpec()
    wspec.attrs = {**wspec.attrs, "ome": new_well}
    nodes[wpath] = wspec
    name = f"{row}{col}_{fpath}"
    nodes.update(field_nodes(f"{wpath}/{fpath}", image, levels, acq, version, labels, name))
    return assemble_tree(nodes)


def _field_paths(tree: xr.DataTree) -> list[str]:
    from .accessor import HcsAccessor

    return HcsAccessor(tree).field_paths
