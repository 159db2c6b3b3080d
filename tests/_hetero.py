"""Heterogeneous plates for property-based tests: a hypothesis strategy, a writer that uses
plain zarr only, and the reference model of the plate-wide views computed field by field.

The reference states what a plate-wide view must be, independently of the library: which
field sits in which ``(well, field)`` slot, the channel labels, each field's position, the
padding and fill values, and when a view must be refused because stacking would have to guess
(labels that differ without ``channels="union"``, sizes without ``pad``, dtypes, spacings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from hypothesis import strategies as st

LABEL_POOL = ("DAPI", "GFP", "RFP", "Cy5")
FIELD_POOL = ("0", "1", "2", "Pos000", "7", "a1")


@dataclass
class FieldSpec:
    path: str
    acquisition: int | None
    labels: list[str] | None  # omero labels; None: no omero (c0, c1, ... are read)
    shape: tuple[int, ...]  # (c, [z,] y, x)
    dtype: str
    fill: Any
    scale: tuple[float, float]  # y, x
    translation: tuple[float, float]
    chunks_written: list[bool]  # per chunk (in C order): written, else absent (fill value)
    data: np.ndarray | None = None  # the pixels as plain zarr reads them (set on write)

    @property
    def channel_labels(self) -> list[str]:
        n = self.shape[0]
        if self.labels is None:
            return [f"c{i}" for i in range(n)]
        return list(self.labels)


@dataclass
class PlateSpec:
    version: str
    z: bool
    acquisitions: list[int] | None
    wells: dict[str, list[FieldSpec]] = field(default_factory=dict)  # "A/1" → fields

    @property
    def rows(self) -> list[str]:
        return sorted({w.split("/")[0] for w in self.wells})

    @property
    def columns(self) -> list[str]:
        return sorted({w.split("/")[1] for w in self.wells}, key=int)

    def well_order(self) -> list[str]:
        """Wells in the plate's order: row by row, column by column."""
        return sorted(self.wells, key=lambda w: (w.split("/")[0], int(w.split("/")[1])))


def _chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[slice, ...]]:
    import itertools

    ranges = [range(math.ceil(n / c)) for n, c in zip(shape, chunks, strict=True)]
    return [tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, shape,
                                                                        strict=True))
            for idx in itertools.product(*ranges)]


CHUNK_YX = 4


@st.composite
def plates(draw: st.DrawFn) -> PlateSpec:
    version = draw(st.sampled_from(["0.4", "0.5"]))
    z = draw(st.booleans())
    acqs = draw(st.sampled_from([None, [0], [0, 1]]))
    cells = [f"{r}/{c}" for r in "AB" for c in ("1", "2", "3")]
    wells = draw(st.lists(st.sampled_from(cells), min_size=1, max_size=4, unique=True))
    base_dtype = draw(st.sampled_from(["uint8", "uint16", "int16", "float32"]))
    base_fill = draw(st.sampled_from([0, 7] + (["NaN"] if base_dtype == "float32" else [])))
    base_labels = draw(st.sampled_from([None, ["DAPI", "GFP"], ["DAPI", "GFP", "RFP"]]))
    base_yx = (draw(st.integers(5, 9)), draw(st.integers(5, 9)))
    base_scale = draw(st.sampled_from([(0.5, 0.5), (1.0, 0.25)]))
    nz = draw(st.integers(1, 2)) if z else 0
    # how varied the plate is: most plates agree on most things
    vary = draw(st.fixed_dictionaries({
        "labels": st.booleans(), "shape": st.booleans(), "dtype": st.integers(0, 9),
        "fill": st.booleans(), "scale": st.integers(0, 5), "position": st.booleans()}))
    spec = PlateSpec(version, z, acqs)
    for w in wells:
        paths = draw(st.lists(st.sampled_from(FIELD_POOL), min_size=1, max_size=3, unique=True))
        fields = []
        for p in paths:
            labels = base_labels
            if vary["labels"] and draw(st.booleans()):
                labels = draw(st.sampled_from([None, ["DAPI", "GFP"], ["DAPI", "RFP"],
                                               ["GFP", "DAPI"], ["DAPI", "GFP", "Cy5"]]))
            nc = len(labels) if labels is not None else (
                len(base_labels) if base_labels is not None else 2)
            yx = base_yx
            if vary["shape"] and draw(st.booleans()):
                yx = (draw(st.integers(4, 10)), draw(st.integers(4, 10)))
            dtype = base_dtype
            if vary["dtype"] == 0 and draw(st.booleans()):
                dtype = "uint16" if base_dtype != "uint16" else "uint8"
            fill: Any = base_fill
            if vary["fill"] and draw(st.booleans()):
                fill = 3
            if fill == "NaN" and dtype != "float32":
                fill = 0
            scale = base_scale
            if vary["scale"] == 0 and draw(st.booleans()):
                scale = (scale[0] * 2, scale[1] * 2)
            trans = (0.0, 0.0)
            if vary["position"]:
                trans = (draw(st.sampled_from([0.0, 50.0])), draw(st.sampled_from([0.0, 100.0,
                                                                                    250.0])))
            shape = (nc, *((nz,) if z else ()), *yx)
            n_chunks = len(_chunk_grid(shape, _chunks(shape)))
            written = draw(st.lists(st.booleans(), min_size=n_chunks, max_size=n_chunks))
            acq = None if acqs is None else draw(st.sampled_from(acqs))
            fields.append(FieldSpec(p, acq, labels, shape, dtype, fill, scale, trans,
                                    written))
        spec.wells[w] = fields
    return spec


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1,) * (len(shape) - 2) + (CHUNK_YX, CHUNK_YX)


def _fill_scalar(f: FieldSpec) -> Any:
    return np.asarray(float("nan") if f.fill == "NaN" else f.fill, dtype=f.dtype)[()]


def write_plate(spec: PlateSpec, root: Path, seed: int = 0) -> None:
    """Write ``spec`` with plain zarr-python, and read every field back into ``data``."""
    rng = np.random.default_rng(seed)
    v2 = spec.version == "0.4"
    g = zarr.open_group(root, mode="w", zarr_format=2 if v2 else 3)
    rows, cols = spec.rows, spec.columns
    plate: dict[str, Any] = {
        "rows": [{"name": r} for r in rows], "columns": [{"name": c} for c in cols],
        "wells": [{"path": w, "rowIndex": rows.index(w.split("/")[0]),
                   "columnIndex": cols.index(w.split("/")[1])} for w in spec.well_order()]}
    if spec.acquisitions is not None:
        plate["acquisitions"] = [{"id": a} for a in spec.acquisitions]
    _attrs(g, {"plate": plate}, spec.version)
    axes = [{"name": "c", "type": "channel"}]
    if spec.z:
        axes.append({"name": "z", "type": "space", "unit": "micrometer"})
    axes += [{"name": "y", "type": "space", "unit": "micrometer"},
             {"name": "x", "type": "space", "unit": "micrometer"}]
    for w, fields in spec.wells.items():
        wg = g.require_group(w)
        images = [{"path": f.path, **({} if f.acquisition is None else
                                      {"acquisition": f.acquisition})} for f in fields]
        _attrs(wg, {"well": {"images": images}}, spec.version)
        for f in fields:
            fg = wg.require_group(f.path)
            lead = [1.0] * (len(f.shape) - 2)
            ms = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [*lead, *f.scale]},
                {"type": "translation", "translation": [0.0] * len(lead) + list(
                    f.translation)}]}]}
            attrs: dict[str, Any] = {"multiscales": [ms]}
            if f.labels is not None:
                attrs["omero"] = {"channels": [
                    {"label": lab, "color": "FFFFFF",
                     "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
                    for lab in f.labels]}
            _attrs(fg, attrs, spec.version)
            kw: dict[str, Any] = {}
            if v2:
                kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
            else:
                kw["dimension_names"] = [a["name"] for a in axes]
            fill = _fill_scalar(f)
            arr = fg.create_array("0", shape=f.shape, dtype=f.dtype, chunks=_chunks(f.shape),
                                  fill_value=fill, **kw)
            for sl, written in zip(_chunk_grid(f.shape, _chunks(f.shape)), f.chunks_written,
                                   strict=True):
                if written:
                    block = rng.integers(1, 120, size=[s.stop - s.start for s in sl])
                    arr[sl] = block.astype(f.dtype)
            f.data = zarr.open_array(root / w / f.path / "0", mode="r")[...]


def _attrs(group: zarr.Group, ome: dict[str, Any], version: str) -> None:
    if version == "0.4":
        out = {}
        for k, v in ome.items():
            if k == "multiscales":
                v = [{**m, "version": "0.4"} for m in v]
            elif k in ("plate", "well"):
                v = {**v, "version": "0.4"}
            out[k] = v
        group.attrs.put(out)
    else:
        group.attrs.put({"ome": {"version": "0.5", **ome}})


# ------------------------------------------------------------------------------ reference


class Refused(Exception):
    """The reference says: a plate-wide view of these fields must be refused."""


@dataclass
class Expected:
    wells: list[str]
    field_paths: np.ndarray  # (well, field) object, "" where absent
    acquisition: np.ndarray
    labels: list[str]
    channel_present: np.ndarray | None  # (well, field, c) for channels="union"
    values: np.ndarray
    positions: dict[str, np.ndarray]  # axis → (well, field, n) absolute coordinates, NaN pad
    sizes: dict[str, np.ndarray]


def expected_stack(spec: PlateSpec, wells: list[str], *, pad: bool, union: bool
                   ) -> Expected:
    """The stacked view of ``wells`` (in plate order) at level 0, or ``Refused``. Every field
    pads with its array's fill value, also where its level was computed anew."""
    entries = [(w, f) for w in wells for f in spec.wells[w]]
    dtypes = {f.dtype for _, f in entries}
    if len(dtypes) > 1:
        raise Refused("dtypes differ")
    dtype = np.dtype(dtypes.pop())
    label_sets = [tuple(f.channel_labels) for _, f in entries]
    if len(set(label_sets)) > 1 and (not union or any(f.labels is None for _, f in entries)):
        # names made up for channels without omero labels are never aligned across fields
        raise Refused("labels differ")
    labels = list(dict.fromkeys(lab for ls in label_sets for lab in ls))
    spatial = entries[0][1].shape[1:]
    shapes = [f.shape[1:] for _, f in entries]
    if not union:
        shapes = [f.shape for _, f in entries]
    if len(set(shapes)) > 1 and not pad:
        raise Refused("shapes differ")
    full_spatial = tuple(max(f.shape[1 + i] for _, f in entries) for i in range(len(spatial)))
    # positions along y and x: shared, or relative on one spacing, else refused
    names = (["z"] if spec.z else []) + ["y", "x"]
    coords: dict[str, list[np.ndarray]] = {}
    for i, name in enumerate(names):
        axis = 1 + i
        per = []
        for _, f in entries:
            n = f.shape[axis]
            if name == "z":
                per.append(np.arange(n, dtype=np.float64))
            else:
                k = 0 if name == "y" else 1
                per.append(f.translation[k] + f.scale[k] * np.arange(n, dtype=np.float64))
        longest = max(range(len(per)), key=lambda j: per[j].size)
        ref = per[longest]
        shared = all(np.array_equal(p, ref[:p.size]) for p in per)
        if not shared:
            rel = ref - ref[0]
            step = float(np.max(np.abs(np.diff(ref)))) if ref.size > 1 else 1.0
            if not all(np.allclose(p - p[0], rel[:p.size], rtol=1e-9, atol=1e-9 * step)
                       for p in per):
                raise Refused(f"spacing differs along {name}")
        coords[name] = per
    nf = max(len(spec.wells[w]) for w in wells)
    nw = len(wells)
    nc = len(labels)
    fills = {(w, f.path): _fill_scalar(f) for w, f in entries}
    first_fill = fills[(entries[0][0], entries[0][1].path)]
    values = np.full((nw, nf, nc, *full_spatial), first_fill, dtype=dtype)
    field_paths = np.full((nw, nf), "", dtype=object)
    acq = np.full((nw, nf), -1, dtype=np.int64)
    present = np.zeros((nw, nf, nc), dtype=bool)
    positions = {n: np.full((nw, nf, full_spatial[i]), np.nan) for i, n in enumerate(names)}
    sizes = {n: np.zeros((nw, nf), dtype=np.int64) for n in names}
    k = 0
    for wi, w in enumerate(wells):
        for fi, f in enumerate(spec.wells[w]):
            field_paths[wi, fi] = f.path
            acq[wi, fi] = -1 if f.acquisition is None else f.acquisition
            block = np.full((nc, *full_spatial), fills[(w, f.path)], dtype=dtype)
            own = f.channel_labels
            for ci, lab in enumerate(labels):
                if lab in own:
                    src = f.data[own.index(lab)]
                    block[(ci, *(slice(0, n) for n in src.shape))] = src
                    present[wi, fi, ci] = True
            values[wi, fi] = block
            for i, n in enumerate(names):
                positions[n][wi, fi, :f.shape[1 + i]] = coords[n][k]
                sizes[n][wi, fi] = f.shape[1 + i]
            k += 1
    return Expected(wells, field_paths, acq, labels, present if union else None, values,
                    positions, sizes)


def channel_sums(im: Any) -> Any:
    """A map_fields function: each channel's sum over every other axis, NaN kept."""
    import xarray as xr

    data = np.asarray(im.values, dtype=np.float64)
    return xr.DataArray(data.sum(axis=tuple(range(1, data.ndim))), dims=("c",),
                        coords={"c": im.coords["c"].values})


def expected_sums(spec: PlateSpec, wells: list[str], union: bool) -> tuple[list[str],
                                                                           np.ndarray]:
    label_sets = [tuple(f.channel_labels) for w in wells for f in spec.wells[w]]
    if len(set(label_sets)) > 1 and (not union or any(
            f.labels is None for w in wells for f in spec.wells[w])):
        raise Refused("labels differ")
    labels = list(dict.fromkeys(lab for ls in label_sets for lab in ls))
    nf = max(len(spec.wells[w]) for w in wells)
    out = np.full((len(wells), nf, len(labels)), np.nan)
    for wi, w in enumerate(wells):
        for fi, f in enumerate(spec.wells[w]):
            sums = np.asarray(f.data, dtype=np.float64).reshape(f.shape[0], -1).sum(axis=1)
            for ci, lab in enumerate(labels):
                if lab in f.channel_labels:
                    out[wi, fi, ci] = sums[f.channel_labels.index(lab)]
    return labels, out
