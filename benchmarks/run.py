"""Benchmarks: xarray_hcs against the peers (ngff-zarr, ngio) and raw baselines, one run.

    python -m benchmarks.run [--quick] [--only P1,P2] [--repeat N] [--save]

Builds its plates once (deterministic, cached under ``benchmarks/_plates/``), runs every
workload for every library in this process (medians of ``--repeat`` runs; peak memory in a
fresh subprocess each) and prints a markdown table; ``--save`` writes it into
``docs/performance.md``.
Timings are never asserted in the test suite; the store-operation counts are (tests/).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PLATES = HERE / "_plates"
DOC = HERE.parent / "docs" / "performance.md"

sys.path.insert(0, str(HERE.parent))

from xarray_hcs.sample import SamplePlate, write_sample_plate  # noqa: E402

# ----------------------------------------------------------------------------- plates

P1_BIG = SamplePlate(rows=16, columns=24, fields=9, levels=3, shape_zyx=(1, 256, 256),
                     pixels=False, version="0.5")
P1_V04 = SamplePlate(rows=8, columns=12, fields=4, levels=3, shape_zyx=(1, 256, 256),
                     pixels=False, version="0.4", column_width=0)
P2_PLATE = SamplePlate(rows=8, columns=12, fields=4, levels=1, shape_zyx=(1, 512, 512),
                       version="0.5", chunk_yx=512)
P6_PLATE = dataclasses.replace(P2_PLATE, rows=16, columns=24)
P3_PLATE = dataclasses.replace(P2_PLATE, levels=3)
#: P4: 384 images, each with a 200-row feature table (tiny images: the tables are the load)
P4_PLATE = SamplePlate(rows=8, columns=12, fields=4, levels=1, shape_zyx=(1, 16, 16),
                       version="0.5", labels=False)
P4_ROWS = 200
QUICK = {
    "P1_BIG": dataclasses.replace(P1_BIG, rows=8, columns=12, fields=4),
    "P1_V04": dataclasses.replace(P1_V04, rows=4, columns=6),
    "P2_PLATE": dataclasses.replace(P2_PLATE, rows=4, columns=6, shape_zyx=(1, 256, 256)),
    "P6_PLATE": dataclasses.replace(P2_PLATE, rows=8, columns=6, shape_zyx=(1, 256, 256)),
    "P3_PLATE": dataclasses.replace(P2_PLATE, rows=2, columns=6, levels=3,
                                    shape_zyx=(1, 256, 256)),
    "P4_PLATE": dataclasses.replace(P4_PLATE, rows=4, columns=6),
}


def _plate(name: str, layout: SamplePlate) -> Path:
    """The plate for ``layout``, written once and reused while its layout is unchanged."""
    key = json.dumps(dataclasses.asdict(layout), sort_keys=True)
    path = PLATES / f"{name}.zarr"
    stamp = PLATES / f"{name}.layout.json"
    if not (path.exists() and stamp.exists() and stamp.read_text() == key):
        PLATES.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        print(f"  writing {name} ({layout.rows * layout.columns} wells x {layout.fields} "
              f"fields x {layout.levels} levels) ...", file=sys.stderr, flush=True)
        write_sample_plate(path, layout, overwrite=True)
        stamp.write_text(key)
        print(f"  ... {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return path


# ----------------------------------------------------------------------------- raw baselines


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def raw_walk(p: Path, wells: list[str] | None = None, levels: list[int] | None = None,
             threads: int = 8) -> int:
    """The practical limit: read and parse every metadata document the plate names, with a
    thread pool, building nothing. Returns the number of documents read."""
    v3 = (p / "zarr.json").exists()

    def attrs(node: str) -> Any:
        if v3:
            doc = _read_json(os.path.join(p, node, "zarr.json"))
            return (doc or {}).get("attributes", {}).get("ome", {})
        return _read_json(os.path.join(p, node, ".zattrs")) or {}

    def arr(node: str) -> Any:
        return _read_json(os.path.join(p, node, "zarr.json" if v3 else ".zarray"))

    n = 0
    with ThreadPoolExecutor(threads) as ex:
        plate_doc = attrs("")
        well_paths = [w["path"] for w in plate_doc["plate"]["wells"]]
        if wells is not None:
            well_paths = [w for w in well_paths if w in set(wells)]
        well_docs = list(ex.map(attrs, well_paths))
        fields = [f"{w}/{im['path']}" for w, d in zip(well_paths, well_docs, strict=True)
                  for im in d["well"]["images"]]
        field_docs = list(ex.map(attrs, fields))
        arrays = []
        for f, d in zip(fields, field_docs, strict=True):
            ds = d["multiscales"][0]["datasets"]
            arrays.extend(f"{f}/{ds[i]['path']}" for i in (levels or range(len(ds))))
        n = 1 + len(well_docs) + len(field_docs) + len(list(ex.map(arr, arrays)))
    return n


def zarr_walk(p: Path) -> int:
    """zarr-python's own API, concurrently (asyncio): open every well, field and level."""
    import asyncio

    import zarr.api.asynchronous as za
    from zarr.core.sync import sync

    async def run() -> int:
        root = await za.open_group(store=str(p), mode="r")
        attrs = root.attrs
        ome = attrs.get("ome", attrs)
        wells = [w["path"] for w in ome["plate"]["wells"]]
        wgroups = await asyncio.gather(*(za.open_group(store=str(p), path=w, mode="r")
                                         for w in wells))
        fields = []
        for w, g in zip(wells, wgroups, strict=True):
            wo = g.attrs.get("ome", g.attrs)
            fields.extend(f"{w}/{im['path']}" for im in wo["well"]["images"])
        fgroups = await asyncio.gather(*(za.open_group(store=str(p), path=f, mode="r")
                                         for f in fields))
        arrays = []
        for f, g in zip(fields, fgroups, strict=True):
            fo = g.attrs.get("ome", g.attrs)
            arrays.extend(f"{f}/{d['path']}" for d in fo["multiscales"][0]["datasets"])
        arrs = await asyncio.gather(*(za.open_array(store=str(p), path=a, mode="r")
                                      for a in arrays))
        return 1 + len(wgroups) + len(fgroups) + len(arrs)

    return sync(run())


def raw_read_reduce(p: Path, threads: int = 4) -> np.ndarray:
    """Threaded plain-zarr read of every level-0 array, mean per channel."""
    import zarr

    root = zarr.open_group(p, mode="r")
    ome = root.attrs.get("ome", root.attrs)
    fields = []
    for w in ome["plate"]["wells"]:
        wg = root[w["path"]]
        wo = wg.attrs.get("ome", wg.attrs)
        fields.extend(f"{w['path']}/{im['path']}/0" for im in wo["well"]["images"])

    def one(path: str) -> np.ndarray:
        a = root[path][...]
        return a.reshape(a.shape[0], -1).mean(axis=1)

    with ThreadPoolExecutor(threads) as ex:
        return np.stack(list(ex.map(one, fields)))


# ----------------------------------------------------------------------------- ours


def ours_open_datatree(p: Path, **kw: Any) -> int:
    import xarray as xr

    dt = xr.open_datatree(p, engine="ome-hcs", **kw)
    return len(dt.hcs.field_paths)


def ours_open_plate(p: Path, **kw: Any) -> int:
    import xarray_hcs

    return len(xarray_hcs.open_plate(p, **kw).hcs.field_paths)


def ours_stacked_reduce(p: Path, scheduler: str | None = None,
                        chunks: dict[str, int] | None = None) -> np.ndarray:
    """The plate at level 0 as one (well, field, c, z, y, x) array; one reduction."""
    import xarray as xr

    ds = xr.open_dataset(p, engine="ome-hcs", level=0, chunks=chunks or {})
    means = ds["image"].mean(["z", "y", "x"], dtype="f8").compute(scheduler=scheduler)
    return means.values[ds.present.values]


def open_route(p: Path, route: str) -> Any:
    """The level-0 tree of ``p`` opened by ``route``."""
    import xarray as xr

    import xarray_hcs

    if route == "open_plate":
        return xarray_hcs.open_plate(p, levels=[0], labels=False)
    chunks = {"lazy": None, "read": None, "chunks={}": {}, "chunks=-1": -1}[route]
    tree = xr.open_datatree(p, engine="ome-hcs", levels=[0], labels=False, chunks=chunks)
    if route == "read":  # one field's pixels read (xarray keeps them in memory)
        tree[f"{tree.hcs.field_paths[0]}/0"]["image"].values  # noqa: B018
    return tree


def ours_stack_reduce(tree: Any, chunks: Any = None) -> tuple[np.ndarray, int]:
    """The stacked view of an open tree, one reduction; (means of the fields present, the
    number of dask layers of the stacked array)."""
    st = tree.hcs.stack(0, chunks=chunks)
    layers = len(st.data.dask.layers)
    means = st.mean(["z", "y", "x"], dtype="f8").compute()
    return means.values[st["present"].values], layers


def cluster_client(workers: int = 2) -> Any:
    """A LocalCluster of worker processes (one thread each) and its client."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, worker_dashboard_address=None)
    return Client(cluster)


def cluster_peak(p: Path) -> tuple[float, float]:
    """(seconds, peak MiB) of the stacked reduction on a fresh 2-process LocalCluster: the
    sum of the client's and every worker's peak resident memory (VmHWM)."""

    def hwm() -> float:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM"))
        return int(line.split()[1]) / 1024

    client = cluster_client()
    try:
        t = time.perf_counter()
        ours_stacked_reduce(p)
        secs = time.perf_counter() - t
        workers = client.run(hwm)
    finally:
        client.close()
        client.cluster.close()
    return secs, hwm() + sum(workers.values())


def ours_read_reduce(p: Path, scheduler: str | None = None) -> np.ndarray:
    """One dask array per field (the tree's own arrays), one reduction per field."""
    import dask

    import xarray_hcs

    dt = xarray_hcs.open_plate(p, levels=[0], labels=False)
    arrays = [dt[f"{f}/0"]["image"].data for f in dt.hcs.field_paths]
    means = [a.mean(axis=tuple(range(1, a.ndim)), dtype="f8") for a in arrays]
    return np.stack(dask.compute(*means, scheduler=scheduler))


# ----------------------------------------------------------------------------- peers


#: ngio at its best: its concurrent plate-wide reads (the default from ngio 1.2 on)
_NGIO_CONCURRENT: dict[str, Any] = {"max_workers": "auto"}


def ngff_zarr_walk(p: Path, wells: list[str] | None = None) -> int:
    import ngff_zarr as nz

    plate_ = nz.from_hcs_zarr(str(p))
    n = 0
    for w in plate_.wells:
        if wells is not None and w.path not in wells:
            continue
        row, col = w.path.split("/")
        well = plate_.get_well(row, col)
        for i in range(len(well.images)):
            ms = well.get_image(i)
            n += len(ms.images)
    return n


def ngio_walk(p: Path) -> int:
    import ngio

    plate_ = ngio.open_ome_zarr_plate(str(p), mode="r")
    n = 0
    for cont in plate_.get_images(**_NGIO_CONCURRENT).values():
        for lv in cont.level_paths:
            cont.get_image(path=lv)
            n += 1
    return n


def ngff_zarr_read_reduce(p: Path) -> np.ndarray:
    import ngff_zarr as nz

    plate_ = nz.from_hcs_zarr(str(p))
    out = []
    for w in plate_.wells:
        row, col = w.path.split("/")
        well = plate_.get_well(row, col)
        for i in range(len(well.images)):
            a = np.asarray(well.get_image(i).images[0].data)
            out.append(a.reshape(a.shape[0], -1).mean(axis=1))
    return np.stack(out)


def ngio_read_reduce(p: Path) -> np.ndarray:
    import ngio

    plate_ = ngio.open_ome_zarr_plate(str(p), mode="r")
    out = []
    for cont in plate_.get_images(**_NGIO_CONCURRENT).values():
        a = cont.get_image().get_as_numpy()
        out.append(a.reshape(a.shape[0], -1).mean(axis=1))
    return np.stack(out)


# ----------------------------------------------------------------------------- writing (P3)


def _fields(p: Path) -> list[tuple[str, list[str]]]:
    """(field path, level paths) of every field, from the metadata (plain zarr)."""
    import zarr

    root = zarr.open_group(p, mode="r")
    ome = root.attrs.get("ome", root.attrs)
    out = []
    for w in ome["plate"]["wells"]:
        wg = root[w["path"]]
        for im in wg.attrs.get("ome", wg.attrs)["well"]["images"]:
            fp = f"{w['path']}/{im['path']}"
            fg = root[fp]
            ms = fg.attrs.get("ome", fg.attrs)["multiscales"][0]
            out.append((fp, [d["path"] for d in ms["datasets"]]))
    return out


def ours_write(src: Path, dst: Path) -> None:
    import xarray as xr

    xr.open_datatree(src, engine="ome-hcs").hcs.to_zarr(dst)


def raw_copy(src: Path, dst: Path, threads: int = 4) -> None:
    """Plain zarr: create every level array alike in ``dst`` and copy it, with threads."""
    import zarr

    s = zarr.open_group(src, mode="r")
    d = zarr.open_group(dst, mode="w", zarr_format=s.metadata.zarr_format)
    paths = [f"{fp}/{lv}" for fp, levels in _fields(src) for lv in levels]

    def one(path: str) -> None:
        a = s[path]
        b = d.create_array(path, shape=a.shape, chunks=a.chunks, dtype=a.dtype,
                           compressors=a.compressors, fill_value=a.fill_value)
        b[...] = a[...]

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, paths))


def ngff_zarr_write(src: Path, dst: Path) -> None:
    """ngff-zarr's HCSPlateWriter: each field's level 0, pyramid by ngff-zarr."""
    import ngff_zarr as nz
    import zarr

    root = zarr.open_group(src, mode="r")
    ome = root.attrs.get("ome", root.attrs)["plate"]
    meta = nz.Plate(columns=[nz.PlateColumn(name=c["name"]) for c in ome["columns"]],
                    rows=[nz.PlateRow(name=r["name"]) for r in ome["rows"]],
                    wells=[nz.PlateWell(path=w["path"], rowIndex=w["rowIndex"],
                                        columnIndex=w["columnIndex"]) for w in ome["wells"]],
                    version="0.5")
    with nz.hcs.HCSPlateWriter(str(dst), meta, version="0.5") as writer:
        for fp, levels in _fields(src):
            r, c, f = fp.split("/")
            a = root[f"{fp}/{levels[0]}"][:, 0]  # ngff-zarr's pyramid wants z > 1 or no z
            img = nz.to_ngff_image(a, dims=["c", "y", "x"], scale={"y": 0.65, "x": 0.65})
            ms = nz.to_multiscales(img, scale_factors=[2 ** i for i in range(1, len(levels))])
            writer.write_well_image(ms, row_name=r, column_name=c, field_index=int(f))


def ngio_write(src: Path, dst: Path, tables: bool = False) -> None:
    """ngio: an empty plate, add_image per field, create_ome_zarr_from_array into it; with
    ``tables``, each field's ``features`` table too (as an AnnData table, from memory)."""
    import ngio
    import pandas as pd
    import zarr
    from ngio.tables import FeatureTable

    root = zarr.open_group(src, mode="r")
    plate_ = ngio.create_empty_plate(str(dst), name="bench", ngff_version="0.5",
                                     overwrite=True)
    # ngio 1.1's AnnData writer cannot write pandas 3's Arrow strings (tests/test_tables.py)
    with pd.option_context("future.infer_string", False):
        for i, (fp, levels) in enumerate(_fields(src)):
            r, c, f = fp.split("/")
            plate_.add_image(r, c, image_path=f)
            img = ngio.create_ome_zarr_from_array(
                store=plate_.get_image_store(r, c, f), array=root[f"{fp}/{levels[0]}"][...],
                pixelsize=0.65, z_spacing=2.0, levels=len(levels),
                axes_names=["c", "z", "y", "x"], ngff_version="0.5", overwrite=True,
                # ngio's faster pyramid builder, its default from ngio 1.2 (the 1.1 default,
                # "dask", was 15-30 % slower on this plate)
                consolidation_mode="auto")
            if tables:
                img.add_table("features", FeatureTable(_feature_table(i)), backend="anndata")


# ----------------------------------------------------------------------------- tables (P4)


def _feature_table(i: int, n: int = P4_ROWS) -> Any:
    """A per-cell feature table like Fractal's: a label, float features, a count, a class."""
    import pandas as pd

    rng = np.random.default_rng(i)
    df = pd.DataFrame({f"feature_{k}": rng.random(n) for k in range(8)})
    df["n_spots"] = rng.integers(0, 20, n)
    df["cell_class"] = np.where(rng.random(n) > 0.5, "mitotic", "interphase")
    df.index = pd.Index(np.arange(1, n + 1), name="label")
    return df


def tables_plate(name: str, layout: SamplePlate, backend: str) -> Path:
    """``layout``'s plate with a ``features`` table in every field, in ``backend``; the table
    files are written as ngio lays them out (tests/test_tables.py checks ngio reads them)."""
    from xarray_hcs.tables import TableMeta, table_documents, tables_group_documents

    path = _plate(f"{name}-{backend}", layout)
    done = path / f".tables-{backend}-{P4_ROWS}"
    if done.exists():
        return path
    print(f"  adding {backend} tables to {path.name} ...", file=sys.stderr, flush=True)
    zf = 2 if layout.version == "0.4" else 3
    meta = TableMeta("feature_table", backend, "1", "label", "int", None, "label")
    import xarray_hcs

    for i, fp in enumerate(xarray_hcs.open_plate(path).hcs.field_paths):
        docs = {f"tables/features/{k}": v for k, v in
                table_documents(_feature_table(i), meta, zf, fp).items()}
        docs.update({f"tables/{k}": v for k, v in
                     tables_group_documents(["features"], {}, zf).items()})
        for k, v in docs.items():
            f = path / fp / k
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(v)
    done.touch()
    return path


def ours_concat(p: Path) -> Any:
    import xarray as xr

    return xr.open_datatree(p, engine="ome-hcs").hcs.concat_tables("features")


def ngio_concat(p: Path) -> Any:
    import ngio

    plate_ = ngio.open_ome_zarr_plate(str(p))
    return plate_.concatenate_image_tables("features", **_NGIO_CONCURRENT).dataframe


def raw_concat(p: Path, backend: str, threads: int = 4) -> Any:
    """Each table file read by its own library (pyarrow; AnnData's ``read_elem`` for X, obs,
    var), then ``pd.concat``: no plate metadata, no labelling."""
    import pandas as pd

    paths = [str(p / fp / "tables" / "features") for fp, _ in _fields(p)]
    if backend == "parquet":
        import pyarrow.parquet as pq

        def one(t: str) -> Any:
            return pq.read_table(f"{t}/table.parquet").to_pandas()
    else:
        import zarr
        from anndata.io import read_elem

        def one(t: str) -> Any:
            g = zarr.open_group(t, mode="r")
            obs, x, var = read_elem(g["obs"]), read_elem(g["X"]), read_elem(g["var"])
            out = pd.DataFrame(x, index=obs.index, columns=var.index)
            return out.join(obs)
    with ThreadPoolExecutor(threads) as ex:
        return pd.concat(list(ex.map(one, paths)))


# ----------------------------------------------------------------------------- harness


@dataclasses.dataclass
class Result:
    workload: str
    library: str
    seconds: float
    peak_mib: float | None = None
    baseline: bool = False
    peer: bool = False
    note: str = ""


#: seconds after which ext4 (without a journal) reuses a deleted, written-back inode
_EXT4_RECENTLY_DELETED_S = 60


def _settle_deletions() -> None:
    """Write back, then wait out ext4's "recently deleted" window, so that no timed write
    pays for an earlier deletion (its inode allocator skips such inodes one by one)."""
    print(f"  waiting {_EXT4_RECENTLY_DELETED_S + 2} s for earlier deletions to settle ...",
          file=sys.stderr, flush=True)
    os.sync()
    time.sleep(_EXT4_RECENTLY_DELETED_S + 2)


@contextlib.contextmanager
def _new_outputs(quick: bool) -> Iterator[Callable[[], Path]]:
    """A new path for every timed write, in a folder deleted only when the workload is over.

    On ext4 without a journal (this VM's disk) creating a file or directory scans past every
    inode deleted in the last minute, so a write right after a mass deletion runs up to 10x
    slower (see docs/performance.md): no run may delete, and the workload starts by waiting
    out earlier deletions.
    """
    outs = PLATES / "_out"
    if outs.exists():
        shutil.rmtree(outs)
    outs.mkdir()
    if not quick:
        _settle_deletions()
    runs = itertools.count()
    try:
        yield lambda: outs / f"{next(runs)}.zarr"
    finally:
        shutil.rmtree(outs, ignore_errors=True)


def timed(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        # flush what earlier runs left dirty, so no run pays for another's writes
        os.sync()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_rss(expr: str, last_line: bool = False) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of ``expr`` run in a fresh interpreter.

    The peak is the child's VmHWM: ``ru_maxrss`` would carry the parent's peak across exec.
    """
    code = (f"import sys, time; sys.path.insert(0, {str(HERE.parent)!r}); "
            "from benchmarks.run import *; t = time.perf_counter(); "
            f"{expr}; dt = time.perf_counter() - t; "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print(dt, int(hwm.split()[1]) / 1024)")
    if last_line:  # ``expr`` prints its own (seconds, MiB)
        code = (f"import sys; sys.path.insert(0, {str(HERE.parent)!r}); "
                f"from benchmarks.run import *\nif __name__ == '__main__':\n    {expr}")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    secs, mib = out.stdout.split()[-2:]
    return float(secs), float(mib)


def run(only: set[str] | None, quick: bool, repeat: int) -> list[Result]:
    layouts = {"P1_BIG": P1_BIG, "P1_V04": P1_V04, "P2_PLATE": P2_PLATE, "P6_PLATE": P6_PLATE,
               "P3_PLATE": P3_PLATE, "P4_PLATE": P4_PLATE}
    if quick:
        layouts = QUICK

    def plate(name: str, layout: SamplePlate) -> Path:  # quick runs keep their own plates
        return _plate(f"quick-{name}" if quick else name, layout)
    res: list[Result] = []

    def want(name: str) -> bool:
        return only is None or name in only

    def add(workload: str, library: str, fn: Callable[[], Any], times: int | None = None,
            **kw: Any) -> None:
        print(f"  {workload:4s} {library} ...", file=sys.stderr, flush=True)
        try:
            secs = timed(fn, times or repeat)
            res.append(Result(workload, library, secs, **kw))
        except Exception as e:  # noqa: BLE001  # a peer that cannot read a plate is a result too
            res.append(Result(workload, library, float("nan"), note=f"failed: {e!r}"[:80],
                              **kw))

    if want("P1"):
        for key, label in (("P1_BIG", "P1"), ("P1_V04", "P1 (0.4)")):
            lay = layouts[key]
            p = plate(key, lay)
            w = f"{label} {lay.rows * lay.columns}x{lay.fields}x{lay.levels}"
            add(w, "raw JSON walk (threads)", lambda p=p: raw_walk(p), baseline=True)
            add(w, "zarr-python async walk", lambda p=p: zarr_walk(p), peer=True)
            add(w, "xarray_hcs xr.open_datatree", lambda p=p: ours_open_datatree(p))
            add(w, "xarray_hcs xr.open_datatree(chunks={})",
                lambda p=p: ours_open_datatree(p, chunks={}))
            add(w, "xarray_hcs open_plate (dask)", lambda p=p: ours_open_plate(p))
            add(w, "ngff-zarr walk", lambda p=p: ngff_zarr_walk(p), peer=True)
            add(w, "ngio walk", lambda p=p: ngio_walk(p), peer=True)
    if want("P1x"):
        import xarray as xr

        lay = layouts["P1_BIG"]
        p = plate("P1_BIG", lay)
        w = f"P1x on the open {lay.rows * lay.columns}x{lay.fields}x{lay.levels} tree"
        names = [f"{r}/{c}" for r in lay.row_names[:2] for c in lay.column_names[:12]]
        add(w, "open (P1, xr.open_datatree)", lambda: ours_open_datatree(p), baseline=True)
        tree = xr.open_datatree(p, engine="ome-hcs")
        add(w, "dt.hcs.sel(wells=24 wells)", lambda: tree.hcs.sel(wells=names))
        add(w, "dt.hcs.sel(acquisition=0)", lambda: tree.hcs.sel(acquisition=0))
        add(w, "repr(dt)", lambda: repr(tree))
        add(w, "dt.hcs.summary()", lambda: tree.hcs.summary())
        del tree  # a live 14,000-node tree would slow every later workload's GC passes
        gc.collect()
    if want("P1s"):
        lay = layouts["P1_BIG"]
        p = plate("P1_BIG", lay)
        names = [f"{r}/{c}" for r in lay.row_names[:2] for c in lay.column_names[:12]]
        w = f"P1s 24 wells, level 0 of {lay.rows * lay.columns}"
        add(w, "raw JSON walk (threads)", lambda: raw_walk(p, wells=names, levels=[0]),
            baseline=True)
        add(w, "xarray_hcs xr.open_datatree",
            lambda: ours_open_datatree(p, wells=names, levels=[0]))
        add(w, "xarray_hcs open_plate (dask)", lambda: ours_open_plate(p, wells=names,
                                                                        levels=[0]))
        add(w, "ngff-zarr walk", lambda: ngff_zarr_walk(p, wells=set(names)), peer=True)
    if want("P2"):
        lay = layouts["P2_PLATE"]
        p = plate("P2_PLATE", lay)
        w = f"P2 mean of level 0, {lay.rows * lay.columns}x{lay.fields}"
        ref = raw_read_reduce(p)
        np.testing.assert_allclose(ours_read_reduce(p), ref)
        np.testing.assert_allclose(ours_stacked_reduce(p), ref)
        add(w, "plain zarr, threads", lambda: raw_read_reduce(p), baseline=True)
        add(w, "xarray_hcs stacked + dask (threads)", lambda: ours_stacked_reduce(p))
        add(w, "xarray_hcs per-field arrays + dask", lambda: ours_read_reduce(p))
        client = cluster_client()
        try:
            ours_stacked_reduce(p)  # workers warm, as the threads are
            add(w, "xarray_hcs stacked, LocalCluster 2 processes",
                lambda: ours_stacked_reduce(p))
            big = {"well": 8, "c": -1}  # fewer, larger tasks: the scheduler's cost is per task
            ours_stacked_reduce(p, chunks=big)
            add(w, "xarray_hcs stacked, LocalCluster, 8-well blocks",
                lambda: ours_stacked_reduce(p, chunks=big))
        finally:
            client.close()
            client.cluster.close()
        add(w, "ngff-zarr loop", lambda: ngff_zarr_read_reduce(p), peer=True)
        add(w, "ngio loop", lambda: ngio_read_reduce(p), peer=True)
    if want("P2v"):  # the stacked view is one route, however the tree was opened
        lay = layouts["P2_PLATE"]
        p = plate("P2_PLATE", lay)
        w = (f"P2v stack + mean of level 0 of an open tree, {lay.rows * lay.columns}x"
             f"{lay.fields}")
        ref = raw_read_reduce(p)
        add(w, "plain zarr, threads", lambda: raw_read_reduce(p), baseline=True)
        for route in ("lazy", "read", "chunks={}", "chunks=-1", "open_plate"):
            tree = open_route(p, route)  # opening is P1's: here the view and its compute
            chunks = {} if route in ("lazy", "read") else None  # dask asked for, or as opened
            got, layers = ours_stack_reduce(tree, chunks)
            np.testing.assert_allclose(got, ref)
            label = {"open_plate": "xarray_hcs.open_plate", "lazy": "xr.open_datatree",
                     "read": "xr.open_datatree, a field read"}.get(
                route, f"xr.open_datatree({route})")
            add(w, f"{label}, then dt.hcs.stack(0{', chunks={}' if chunks == {} else ''})",
                lambda tree=tree, chunks=chunks: ours_stack_reduce(tree, chunks),
                note=f"{layers} dask layer{'s' * (layers != 1)}")
    if want("P3"):
        lay = layouts["P3_PLATE"]
        src = plate("P3_PLATE", lay)
        w = f"P3 write {lay.rows * lay.columns}x{lay.fields}x{lay.levels} with pixels"
        with _new_outputs(quick) as dst:
            add(w, "plain zarr copy, threads", lambda: raw_copy(src, dst()), baseline=True)
            add(w, "xarray_hcs dt.hcs.to_zarr", lambda: ours_write(src, dst()))
            add(w, "ngff-zarr HCSPlateWriter", lambda: ngff_zarr_write(src, dst()), peer=True,
                times=1)
            add(w, "ngio create + add_image", lambda: ngio_write(src, dst()), peer=True,
                times=1)
    if want("P3t"):  # the plate of P4: 384 tiny images, each with a 200-row AnnData table
        lay = layouts["P4_PLATE"]
        src = tables_plate("quick-P4" if quick else "P4", lay, "anndata")
        n = lay.rows * lay.columns * lay.fields
        w = f"P3t write {n} small images with a {P4_ROWS}-row table each"
        with _new_outputs(quick) as dst:
            add(w, "xarray_hcs dt.hcs.to_zarr", lambda: ours_write(src, dst()))
            add(w, "ngio create + add_image + add_table",
                lambda: ngio_write(src, dst(), tables=True), peer=True, times=1)
    if want("P4"):
        lay = layouts["P4_PLATE"]
        n = lay.rows * lay.columns * lay.fields
        for backend in ("anndata", "parquet"):
            p = tables_plate("quick-P4" if quick else "P4", lay, backend)
            w = f"P4 concat {n} tables x {P4_ROWS} rows ({backend})"
            add(w, f"{backend} reader per file, threads", lambda p=p, b=backend: raw_concat(p, b),
                baseline=True)
            add(w, "xarray_hcs open + concat_tables", lambda p=p: ours_concat(p))
            add(w, "ngio open + concatenate_image_tables", lambda p=p: ngio_concat(p),
                peer=True, times=1)
    if want("P6"):
        lay = layouts["P6_PLATE"]
        p = plate("P6_PLATE", lay)
        w = f"P6 peak memory of P2 on {lay.rows * lay.columns}x{lay.fields}"
        for lib, expr, kw in (
            ("plain zarr, threads", f"raw_read_reduce(Path({str(p)!r}))", {"baseline": True}),
            ("xarray_hcs stacked + dask (threads)", f"ours_stacked_reduce(Path({str(p)!r}))",
             {}),
            ("ngff-zarr loop", f"ngff_zarr_read_reduce(Path({str(p)!r}))", {"peer": True}),
        ):
            print(f"  P6   {lib} ...", file=sys.stderr, flush=True)
            secs, mib = peak_rss(expr)
            res.append(Result(w, lib, secs, peak_mib=mib, **kw))
        print("  P6   xarray_hcs on a LocalCluster ...", file=sys.stderr, flush=True)
        secs, mib = peak_rss(f"print(*cluster_peak(Path({str(p)!r})))", last_line=True)
        res.append(Result(w, "xarray_hcs stacked, LocalCluster 2 processes (client + workers)",
                          secs, peak_mib=mib))
    return res


def table(res: list[Result]) -> str:
    lines = ["| workload | library | median s | × raw | × fastest peer | peak MiB | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for w in dict.fromkeys(r.workload for r in res):
        rows = [r for r in res if r.workload == w]
        base = next((r.seconds for r in rows if r.baseline), float("nan"))
        peers = [r.seconds for r in rows if r.peer and np.isfinite(r.seconds)]
        fastest = min(peers) if peers else float("nan")
        for r in rows:
            rb = r.seconds / base if not math.isnan(base) and base > 0 else float("nan")
            rp = (r.seconds / fastest if (not r.baseline and not r.peer and not math.isnan(fastest))
                  else float("nan"))
            mib = f"{r.peak_mib:.0f}" if r.peak_mib is not None else ""
            lines.append(f"| {w} | {r.library} | {r.seconds:.3f} | {_f(rb)} | {_f(rp)} | "
                         f"{mib} | {r.note} |")
    return "\n".join(lines)


def _f(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.2f}"


def machine() -> str:
    import dask
    import psutil
    import xarray
    import zarr

    versions = [f"xarray {xarray.__version__}", f"zarr {zarr.__version__}",
                f"dask {dask.__version__}"]
    for mod in ("ngff_zarr", "ngio"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return (f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python "
            f"{platform.python_version()}; " + ", ".join(versions))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run")
    ap.add_argument("--quick", action="store_true", help="small plates, one minute")
    ap.add_argument("--only", default=None,
                    help="comma-separated workloads: P1,P1x,P1s,P2,P3,P3t,P4,P6")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--save", action="store_true",
                    help="write the table into docs/performance.md (default: print only)")
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    res = run(only, args.quick, max(1, args.repeat if not args.quick else 1))
    text = table(res)
    print(text)
    if args.save and not args.quick:
        _save(text if only is None else _merged(text))
    return 0


def _merged(text: str) -> str:
    """The saved table with the workloads just run replaced (``--only`` runs)."""
    doc = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- benchmark table: start -->", "<!-- benchmark table: end -->"
    if start not in doc:
        return text
    old = [ln for ln in doc[doc.index(start):doc.index(end)].splitlines()
           if ln.startswith("| ") and not ln.startswith("| workload")]
    new = [ln for ln in text.splitlines()
           if ln.startswith("| ") and not ln.startswith("| workload")]
    ran = {ln.split(" | ")[0] for ln in new}
    kept, done = [], False
    for ln in old:
        if ln.split(" | ")[0] in ran:
            if not done:  # the new rows where the old ones were
                kept.extend(new)
                done = True
            continue
        kept.append(ln)
    if not done:
        kept.extend(new)
    head = text.splitlines()[:2]
    return "\n".join(head + kept)


def _save(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- benchmark table: start -->", "<!-- benchmark table: end -->"
    block = (f"{start}\nMeasured by `python -m benchmarks.run` on {machine()}, "
             f"{time.strftime('%Y-%m-%d')}.\n\n{text}\n{end}")
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc + "\n" + block + "\n"
    DOC.write_text(doc)


if __name__ == "__main__":
    raise SystemExit(main())
