"""The built-in synthetic sample plate (for ``xarray-hcs demo``, tests and benchmarks).

Pixels are deterministic and carry their position: every well has a known base intensity
(:func:`well_intensity`), so a per-well mean recovers the plate layout, and each field shows a
few bright "nuclei" whose label image is written alongside when ``labels=True``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ngff import encode_attrs

__all__ = ["SamplePlate", "write_sample_plate", "well_intensity", "DEMO"]


@dataclass(frozen=True)
class SamplePlate:
    """The layout of a synthetic plate."""

    rows: int = 8
    columns: int = 12
    fields: int = 2
    channels: Sequence[str] = ("DAPI", "GFP")
    levels: int = 3
    shape_zyx: tuple[int, int, int] = (1, 128, 128)
    pixel_size: float = 0.65
    z_spacing: float = 2.0
    dtype: str = "uint16"
    version: str = "0.5"
    labels: bool = False
    #: a "nuclei" feature table per field (label, area, mean intensity per channel), as
    #: Fractal measures it from the labels (needs ``labels`` and ``pixels``)
    tables: bool = False
    pixels: bool = True  # False writes metadata only (chunks absent read as fill value)
    column_width: int = 2  # "03" (2) or "3" (0: no zero padding)
    chunk_yx: int = 256

    @property
    def row_names(self) -> list[str]:
        letters = string.ascii_uppercase
        return [letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26]
                for i in range(self.rows)]

    @property
    def column_names(self) -> list[str]:
        return [str(c + 1).zfill(self.column_width) for c in range(self.columns)]


#: the plate ``xarray-hcs demo`` writes: 96 wells, 2 fields, 2 channels, 3 levels, NGFF 0.5
DEMO = SamplePlate(labels=True, tables=True)


def well_intensity(row: int, column: int, channel: int) -> int:
    """The base intensity of a well in the sample plate (rows/columns/channels from 0)."""
    return 100 + 20 * row + 5 * column + 1000 * channel


def _field_pixels(layout: SamplePlate, r: int, c: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(r * 1_000_003 + c * 1009 + f)
    nz, ny, nx = layout.shape_zyx
    nch = len(layout.channels)
    img = np.empty((nch, nz, ny, nx), dtype=layout.dtype)
    labels = np.zeros((nz, ny, nx), dtype=np.uint32)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for k in range(1 + (r + c + f) % 4):  # a few round nuclei
        cy, cx = rng.integers(8, max(9, ny - 8)), rng.integers(8, max(9, nx - 8))
        rad = max(2, min(ny, nx) // 12)
        labels[:, (yy - cy) ** 2 + (xx - cx) ** 2 <= rad * rad] = k + 1
    for ch in range(nch):
        base = well_intensity(r, c, ch)
        img[ch] = base + (labels > 0) * (200 + 50 * ch)
    return img, labels


def _pyramid(a: np.ndarray, levels: int, reduce: str) -> list[np.ndarray]:
    out = [a]
    for _ in range(1, levels):
        prev = out[-1]
        ny, nx = prev.shape[-2] // 2 * 2, prev.shape[-1] // 2 * 2
        p = prev[..., :ny, :nx]
        if reduce == "mean":
            blocks = p.reshape(*p.shape[:-2], ny // 2, 2, nx // 2, 2).astype(np.float64)
            mean = blocks.mean(axis=(-3, -1))
            if np.issubdtype(a.dtype, np.integer):  # rounded, as add_image's levels are
                mean = np.round(mean)
            out.append(mean.astype(a.dtype))
        else:  # labels: nearest
            out.append(p[..., ::2, ::2])
    return out


def _multiscales(layout: SamplePlate, axes: list[dict[str, Any]], name: str,
                 label: bool = False) -> dict[str, Any]:
    """Each level's scale and translation, by the rule every pyramid of the library follows
    (and ngff-zarr's and ome-zarr-py's): a pixel of an image level is the mean of a 2 x 2
    block, so its centre sits half a finer pixel on (translation (f - 1) / 2 level-0
    pixels); a label level keeps every other pixel, whose centres do not move."""
    nz = len([a for a in axes if a["type"] == "space"])
    lead = len(axes) - nz
    datasets = []
    for lv in range(layout.levels):
        f = 2.0**lv
        zyx = [layout.z_spacing, layout.pixel_size * f, layout.pixel_size * f][-nz:]
        shift = 0.0 if label else (f - 1) / 2 * layout.pixel_size
        move = [0.0, shift, shift][-nz:]
        datasets.append({"path": str(lv), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * lead + zyx},
            {"type": "translation", "translation": [0.0] * lead + move}]})
    return {"multiscales": [{"axes": axes, "datasets": datasets, "name": name}]}


def write_sample_plate(store: str | Path, layout: SamplePlate = DEMO,
                       overwrite: bool = False) -> Path:
    """Write the synthetic plate ``layout`` to ``store`` and return its path.

    Parameters
    ----------
    store
        Directory to create (``*.zarr``).
    layout
        What to write; :data:`DEMO` by default.
    overwrite
        Replace an existing store at ``store``.
    """
    from .store import run_sync

    path = Path(store)
    run_sync(_write_plate(path, layout, overwrite))
    return path


async def _write_plate(path: Path, layout: SamplePlate, overwrite: bool) -> None:
    import asyncio

    from zarr.api.asynchronous import open_group

    version = layout.version
    zarr_format = 2 if version == "0.4" else 3
    root = await open_group(store=path, mode="w" if overwrite else "w-",
                            zarr_format=zarr_format)
    rows, cols = layout.row_names, layout.column_names
    wells = [{"path": f"{r}/{c}", "rowIndex": i, "columnIndex": j}
             for i, r in enumerate(rows) for j, c in enumerate(cols)]
    plate = {"name": "xarray-hcs sample plate", "rows": [{"name": r} for r in rows],
             "columns": [{"name": c} for c in cols], "wells": wells,
             "acquisitions": [{"id": 0, "name": "sample", "maximumfieldcount": layout.fields}],
             "field_count": layout.fields}
    await root.update_attributes(encode_attrs({"plate": plate}, None, version))
    axes = [{"name": "c", "type": "channel"},
            {"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    colors = ["0000FF", "00FF00", "FF0000", "FFFFFF"]
    omero = {"channels": [{"label": ch, "color": colors[i % 4], "active": True,
                           "window": {"start": 0, "end": 4000, "min": 0, "max": 65535}}
                          for i, ch in enumerate(layout.channels)]}
    # bounded concurrency: enough to hide per-file latency, not so much to exhaust handles
    limit = asyncio.Semaphore(32)

    async def field(well: Any, i: int, j: int, f: int) -> None:
        async with limit:
            name = f"{rows[i]}{cols[j]}_{f}"
            fg = await well.create_group(str(f), attributes=encode_attrs(
                {**_multiscales(layout, axes, name), "omero": omero}, None, version))
            img, lab = _field_pixels(layout, i, j, f) if layout.pixels else (None, None)
            shape = (len(layout.channels), *layout.shape_zyx)
            await _write_levels(fg, layout, shape, layout.dtype, img, "mean", ["c", "z", "y", "x"],
                                zarr_format)
            if layout.labels:
                lg = await fg.create_group("labels", attributes=encode_attrs(
                    {"labels": ["nuclei"]}, None, version))
                ng = await lg.create_group("nuclei", attributes=encode_attrs(
                    {**_multiscales(layout, axes[1:], "nuclei", label=True),
                     "image-label": {"source": {"image": "../../"}}}, None, version))
                await _write_levels(ng, layout, layout.shape_zyx, "uint32", lab, "nearest",
                                    ["z", "y", "x"], zarr_format)
                if layout.tables and img is not None and lab is not None:
                    await _write_table(root, f"{rows[i]}/{cols[j]}/{f}", layout, img, lab,
                                       zarr_format)

    async def well(i: int, j: int, row: Any) -> None:
        images = [{"path": str(f), "acquisition": 0} for f in range(layout.fields)]
        async with limit:
            wg = await row.create_group(cols[j], attributes=encode_attrs(
                {"well": {"images": images}}, None, version))
        await asyncio.gather(*(field(wg, i, j, f) for f in range(layout.fields)))

    async def row(i: int) -> None:
        async with limit:
            rg = await root.create_group(rows[i])
        await asyncio.gather(*(well(i, j, rg) for j in range(len(cols))))

    await asyncio.gather(*(row(i) for i in range(len(rows))))


def nuclei_table(layout: SamplePlate, img: np.ndarray, lab: np.ndarray) -> Any:
    """Per nucleus of a field: its area (pixels) and mean intensity in each channel."""
    import pandas as pd

    flat = lab.ravel()
    ids, inverse, area = np.unique(flat, return_inverse=True, return_counts=True)
    keep = ids > 0
    cols: dict[str, Any] = {"area": area[keep].astype(np.float64)}
    for ch, name in enumerate(layout.channels):
        sums = np.bincount(inverse, weights=img[ch].ravel().astype(np.float64))
        cols[f"mean_{name}"] = sums[keep] / area[keep]
    return pd.DataFrame(cols, index=pd.Index(ids[keep].astype(np.int64), name="label"))


async def _write_table(root: Any, field: str, layout: SamplePlate, img: np.ndarray,
                       lab: np.ndarray, zarr_format: int) -> None:
    from zarr.core.buffer import default_buffer_prototype

    from .tables import TableMeta, table_documents, tables_group_documents

    meta = TableMeta("feature_table", "parquet", "1", "label", "int", "../labels/nuclei",
                     "label")
    docs = {f"tables/{k}": v for k, v in tables_group_documents(["nuclei"], {},
                                                                zarr_format).items()}
    docs.update({f"tables/nuclei/{k}": v for k, v in table_documents(
        nuclei_table(layout, img, lab), meta, zarr_format, field).items()})
    store = root.store_path.store
    proto = default_buffer_prototype()
    for key, raw in docs.items():
        await store.set(f"{field}/{key}", proto.buffer.from_bytes(raw))


async def _write_levels(group: Any, layout: SamplePlate, shape: tuple[int, ...], dtype: str,
                        data: np.ndarray | None, reduce: str, dims: list[str],
                        zarr_format: int) -> None:
    pyr = _pyramid(data, layout.levels, reduce) if data is not None else None
    for lv in range(layout.levels):
        f = 2**lv
        lshape = (*shape[:-2], max(1, shape[-2] // f), max(1, shape[-1] // f))
        chunks = (*([1] * (len(shape) - 2)), min(layout.chunk_yx, lshape[-2]),
                  min(layout.chunk_yx, lshape[-1]))
        kw: dict[str, Any] = {"dimension_names": dims} if zarr_format == 3 else {
            "chunk_key_encoding": {"name": "v2", "separator": "/"}}
        arr = await group.create_array(str(lv), shape=lshape, chunks=chunks, dtype=dtype,
                                       fill_value=0, **kw)
        if pyr is not None:
            await arr.setitem(Ellipsis, pyr[lv])
