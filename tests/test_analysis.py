"""map_fields: per-field functions over the plate, collected by kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xarray_hcs.errors import HcsError
from xarray_hcs.sample import well_intensity


def _median(im: xr.DataArray) -> xr.DataArray:
    return im.median([d for d in im.dims if d != "c"])


def test_map_fields_numbers_and_arrays(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    ds = dt.hcs.map_fields(_median)
    assert ds["image"].dims == ("well", "field", "c")
    assert list(ds["c"].values) == ["DAPI", "GFP"]
    assert list(ds["well"].values) == dt.hcs.wells
    for w in dt.hcs.wells:
        r, c = w.split("/")
        ri, ci = dt.hcs.rows.index(r), dt.hcs.columns.index(c)
        for ch in range(2):
            # the background of each field is its well's base intensity
            assert (ds["image"].sel(well=w).isel(c=ch).values == well_intensity(ri, ci, ch)).all()
    scalars = dt.hcs.map_fields(lambda im: float(im.max()), level=-1)
    assert scalars["result"].dims == ("well", "field")
    multi = dt.hcs.map_fields(lambda im: {"max": im.max(), "n": im.size})
    assert set(multi.data_vars) == {"max", "n"}


def test_map_fields_absent_fields_are_nan(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    w0 = dt.hcs.wells[0]
    image = dt[f"{dt.hcs.field_paths[0]}/0"]["image"]
    more = dt.hcs.add_image(*w0.split("/"), image, field="2")  # a third field in one well
    ds = more.hcs.map_fields(lambda im: float(im.mean()))
    assert ds.sizes == {"well": len(dt.hcs.wells), "field": 3}
    assert bool(ds["present"].sel(well=w0)[2]) is True
    w1 = dt.hcs.wells[1]
    assert bool(ds["present"].sel(well=w1)[2]) is False
    assert np.isnan(float(ds["result"].sel(well=w1)[2]))
    assert ds["field_path"].sel(well=w0).values.tolist() == ["0", "1", "2"]


def test_map_fields_frames(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")

    def objects(im: xr.DataArray) -> pd.DataFrame:
        return pd.DataFrame({"brightest": [float(im.max())], "kind": ["field"]},
                            index=pd.Index([1], name="object"))

    df = dt.hcs.map_fields(objects)
    assert len(df) == len(dt.hcs.field_paths)
    assert list(df.columns[:4]) == ["row", "column", "field", "object"]
    assert df.index[0] == dt.hcs.field_paths[0].replace("/", "_") + "_1"


def test_map_fields_kwargs_dataset_and_lazy(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    ds = dt.hcs.map_fields(lambda d, k: float(d["image"].isel(c=0).max()) * k, variable=None,
                           k=2)
    assert float(ds["result"].max()) > 0
    delayed = dt.hcs.map_fields(lambda im: float(im.mean()), compute=False)
    assert delayed.compute()["result"].shape == (len(dt.hcs.wells), 2)


def test_map_fields_inconsistent_results(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")

    def ragged(im: xr.DataArray) -> np.ndarray:
        return np.zeros(2 if _row_a(im) else 3)

    with pytest.raises(HcsError, match="same shape"):
        dt.hcs.map_fields(ragged, level=-1)
    with pytest.raises(HcsError, match="one kind"):
        dt.hcs.map_fields(lambda im: pd.DataFrame({"a": [1]}) if _row_a(im) else 1.0)


def _row_a(im: xr.DataArray) -> bool:
    """True for the fields of row A (DAPI background 100-110; row B's is 120-130)."""
    return float(im.isel(c=0).median()) < 115
