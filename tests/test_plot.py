"""Montage and plate heatmap: the right values in the right places."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xarray_hcs.errors import HcsError, HcsSelectionError
from xarray_hcs.plot import plate_grid
from xarray_hcs.sample import SamplePlate, well_intensity, write_sample_plate

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def big_plate(tmp_path_factory):
    return write_sample_plate(tmp_path_factory.mktemp("plot") / "p.zarr",
                              SamplePlate(rows=3, columns=4, fields=3, levels=2,
                                          shape_zyx=(2, 32, 32)))


def test_montage_puts_each_well_where_it_is_on_the_plate(big_plate):
    dt = xr.open_datatree(big_plate, engine="ome-hcs")
    kept = ["A/01", "A/04", "B/02", "C/03"]
    dt = dt.hcs.sel(wells=kept)
    for ch, name in enumerate(["DAPI", "GFP"]):
        m = dt.hcs.montage(level=0, channel=name, agg="median")
        assert m.dims == ("y", "x")
        cell_y, cell_x = m.attrs["cell_shape"]
        assert (cell_y, cell_x) == (2 * 32, 2 * 32)  # 3 fields tiled 2 x 2
        for ri, r in enumerate(["A", "B", "C"]):
            for ci, c in enumerate(["01", "02", "03", "04"]):
                region = m.where((m.well_row == r) & (m.well_column == c), drop=True)
                assert region.shape == (cell_y, cell_x)
                if f"{r}/{c}" in kept:
                    # the fields' background is the well's known intensity
                    assert float(np.nanmedian(region.values)) == well_intensity(ri, ci, ch)
                    # three fields and one blank tile
                    assert np.isnan(region.values).sum() == 32 * 32
                else:
                    assert np.isnan(region.values).all()  # not on this plate: blank
        gaps = m.where(m.well_row == "", drop=True)
        assert np.isnan(gaps.values).all()


def test_montage_channels_levels_and_errors(big_plate):
    dt = xr.open_datatree(big_plate, engine="ome-hcs")
    both = dt.hcs.montage()
    assert both.dims == ("c", "y", "x") and list(both.c.values) == ["DAPI", "GFP"]
    assert dt.hcs.montage(level=0).sizes["y"] == 2 * both.sizes["y"] - 2 * 2  # gaps stay
    with pytest.raises(HcsSelectionError, match="RFP"):
        dt.hcs.montage(channel="RFP")
    with pytest.raises(ValueError, match="agg"):
        dt.hcs.montage(agg="sum")
    lazy = xr.open_datatree(big_plate, engine="ome-hcs", chunks={})  # dask arrays
    np.testing.assert_array_equal(lazy.hcs.montage(channel=1).values,
                                  dt.hcs.montage(channel=1).values)


def test_plate_grid_takes_every_per_well_form(big_plate):
    dt = xr.open_datatree(big_plate, engine="ome-hcs")
    by_well = pd.Series({"A/01": 1.0, "C/04": 2.0}, name="v")
    by_pair = pd.Series([1.0, 2.0], index=pd.MultiIndex.from_tuples([("A", "01"),
                                                                       ("C", 4)]))
    frame = pd.DataFrame({"row": ["A", "C"], "column": ["01", "04"], "v": [1.0, 2.0]})
    da = xr.DataArray([1.0, 2.0], dims="well", coords={"well": ["A/01", "C/04"]})
    for values in (by_well, by_pair, frame, da):
        g = plate_grid(dt, values)
        assert g.dims == ("row", "column") and g.shape == (3, 4)
        assert float(g.sel(row="A", column="01")) == 1.0
        assert float(g.sel(row="C", column="04")) == 2.0
        assert int(np.isnan(g.values).sum()) == 10
    with pytest.raises(HcsSelectionError, match="Z/99"):
        plate_grid(dt, pd.Series({"Z/99": 1.0}))
    with pytest.raises(HcsError, match="one dim"):
        plate_grid(dt, xr.DataArray(np.zeros((2, 2)), dims=("well", "field")))


def test_plots_draw(big_plate, tmp_path):
    dt = xr.open_datatree(big_plate, engine="ome-hcs")
    ax = dt.hcs.plot_montage(channel="DAPI")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B", "C"]
    ax.figure.savefig(tmp_path / "m.png")
    means = dt.hcs.map_fields(lambda im: float(im.isel(c=0).median()))["result"]
    ax = dt.hcs.plot_plate(means.mean("field"), label="median DAPI")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["01", "02", "03", "04"]
    image = ax.get_images()[0].get_array()
    assert image[0, 0] == well_intensity(0, 0, 0) and image[2, 3] == well_intensity(2, 3, 0)
    ax.figure.savefig(tmp_path / "h.png")
    assert (tmp_path / "m.png").stat().st_size > 1000 and (tmp_path / "h.png").exists()
