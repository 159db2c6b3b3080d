"""The plate on a real dask.distributed cluster: worker processes, not threads.

The arrays travel to the workers as (store, path) and are read there; nothing global is
needed in the workers but the installed package.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

import xarray_hcs
from xarray_hcs.sample import SamplePlate, well_intensity, write_sample_plate

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    import dask

    # the workers' scratch space among the test's own temporary files, not in TMPDIR
    with dask.config.set({"temporary-directory": str(tmp_path_factory.mktemp("dask"))}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, worker_dashboard_address=None
                                     ) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_plate(tmp_path_factory):
    return write_sample_plate(tmp_path_factory.mktemp("cluster") / "p.zarr",
                              SamplePlate(rows=2, columns=3, fields=2, levels=2,
                                          shape_zyx=(1, 64, 64), labels=True))


def _numpy_well_means(path) -> dict[str, np.ndarray]:
    """Per-well, per-channel means straight from zarr, for comparison."""
    root = zarr.open_group(path, mode="r")
    out = {}
    for w in root.attrs["ome"]["plate"]["wells"]:
        fields = [np.asarray(root[f"{w['path']}/{im['path']}/0"][...], dtype=np.float64)
                  for im in root[w["path"]].attrs["ome"]["well"]["images"]]
        out[w["path"]] = np.stack(fields).mean(axis=(0, 2, 3, 4))
    return out


def test_per_well_mean_on_the_cluster(client, cluster_plate):
    ds = xr.open_dataset(cluster_plate, engine="ome-hcs", level=0, chunks={})
    means = ds["image"].mean(["field", "z", "y", "x"])
    assert client.run(lambda: 1)  # the workers are up
    result = means.compute()  # the default scheduler is the client
    expected = _numpy_well_means(cluster_plate)
    for w in result["well"].values:
        np.testing.assert_allclose(result.sel(well=w).values, expected[str(w)], rtol=1e-12)
    # the work ran in the worker processes
    assert any(k.startswith(("ome-hcs", "mean")) or "ome-hcs" in k
               for k in client.run_on_scheduler(
                   lambda dask_scheduler: list(dask_scheduler.task_prefixes)))


def test_open_plate_fields_compute_on_the_cluster(client, cluster_plate):
    dt = xarray_hcs.open_plate(cluster_plate)
    # dask arrays on the zarr chunks; the median of the DAPI plane is the well's background
    lazy = {fp: dt[f"{fp}/0"]["image"].isel(c=0, z=0).median(["y", "x"])
            for fp in dt.hcs.field_paths}
    futures = client.compute(list(lazy.values()))
    got = [float(f.result()) for f in futures]
    rows, cols = dt.hcs.rows, dt.hcs.columns
    expected = [well_intensity(rows.index(fp.split("/")[0]), cols.index(fp.split("/")[1]), 0)
                for fp in lazy]
    assert got == expected


def test_map_fields_on_the_cluster(client, cluster_plate):
    dt = xr.open_datatree(cluster_plate, engine="ome-hcs")
    ds = dt.hcs.map_fields(lambda im: im.median(["z", "y", "x"]))
    for w in dt.hcs.wells:
        r, c = w.split("/")
        base = [well_intensity(dt.hcs.rows.index(r), dt.hcs.columns.index(c), ch)
                for ch in range(2)]
        np.testing.assert_array_equal(ds["image"].sel(well=w).values, [base, base])


def _write_one(store: str, field: str, value: int) -> str:
    # runs in a worker process: builds its image and writes it into the planned arrays
    img = xr.DataArray(np.full((2, 1, 32, 32), value, dtype="uint16"),
                       dims=("c", "z", "y", "x"), coords={"c": ["DAPI", "GFP"]})
    xarray_hcs.write_field(store, field, img)
    return field


def test_cluster_fills_a_planned_plate(client, tmp_path):
    template = xr.DataArray(np.zeros((2, 1, 32, 32), dtype="uint16"),
                            dims=("c", "z", "y", "x"), coords={"c": ["DAPI", "GFP"]})
    store = str(tmp_path / "planned.zarr")
    fields = xarray_hcs.create_plate(store, ["A/01", "A/02", "B/01"], template, fields=2,
                                     levels=2)
    values = {fp: 10 * (i + 1) for i, fp in enumerate(fields)}
    futures = client.map(_write_one, [store] * len(fields), fields,
                         [values[f] for f in fields])
    assert sorted(client.gather(futures)) == sorted(fields)
    dt = xr.open_datatree(store, engine="ome-hcs")
    assert dt.hcs.field_paths == fields
    for fp, v in values.items():
        assert (dt[f"{fp}/0"]["image"].values == v).all()
        assert (dt[f"{fp}/1"]["image"].values == v).all()  # the pyramid, too


def test_to_zarr_job_runs_on_the_cluster(client, cluster_plate, tmp_path):
    dt = xr.open_datatree(cluster_plate, engine="ome-hcs")
    sub = dt.hcs.sel(wells=dt.hcs.wells[:3])
    job = sub.hcs.to_zarr(tmp_path / "copy.zarr", compute=False)
    client.compute(job).result()  # pixels, then the metadata, from the workers
    back = xr.open_datatree(tmp_path / "copy.zarr", engine="ome-hcs")
    assert back.hcs.field_paths == sub.hcs.field_paths
    for fp in sub.hcs.field_paths:
        np.testing.assert_array_equal(back[f"{fp}/0"]["image"].values,
                                      sub[f"{fp}/0"]["image"].values)
        np.testing.assert_array_equal(back[f"{fp}/labels/nuclei/0"]["labels"].values,
                                      sub[f"{fp}/labels/nuclei/0"]["labels"].values)
