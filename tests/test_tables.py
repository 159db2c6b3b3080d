"""Tables: ngio-written tables read as ngio reads them, ours read by ngio, concat, bad input."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xarray_hcs
from xarray_hcs.errors import (
    HcsError,
    HcsMetadataError,
    HcsMissingWarning,
    HcsNotFoundError,
    HcsPathError,
    HcsSelectionError,
)
from xarray_hcs.tables import HcsTableError

ngio = pytest.importorskip("ngio")

BACKENDS = ("anndata", "parquet", "csv", "json")
FIELDS = [("A", "01", "0"), ("A", "01", "1"), ("A", "02", "0"), ("B", "01", "0")]
ROIS = pd.DataFrame({
    "x_micrometer": [0.0, 2.0], "y_micrometer": [0.0, 1.0], "z_micrometer": [0.0, 0.0],
    "len_x_micrometer": [4.0, 3.0], "len_y_micrometer": [4.0, 2.0],
    "len_z_micrometer": [1.0, 1.0]}, index=pd.Index(["FOV_1", "FOV_2"], name="FieldIndex"))


def _features(seed: int, n: int = 5) -> pd.DataFrame:
    """Per-cell features whose values say which field they came from (seed)."""
    return pd.DataFrame({
        "label": np.arange(1, n + 1),
        "area": np.full(n, float(seed)),
        "mean_intensity": np.arange(n) + 0.5 + seed * 100,
        "is_border": np.arange(n) % 2 == 0,
        "cell_class": [f"class{seed}_{i % 2}" for i in range(n)],
        "n_spots": np.arange(n, dtype=np.int64) * seed,
    })


def _quiet():
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _ngio_plate(path: Path, version: str) -> Path:
    """An ngio plate: every table type on A/01/0 in every backend, features in mixed backends
    on the other fields (none on B/01/0), and plate-level condition tables."""

    # ngio's AnnData writer cannot write pandas 3's Arrow-backed strings: write the fixture
    # with pandas' object strings, as ngio's own (pandas 2) users do
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pd.option_context("future.infer_string", False):  # restores what was set
            return _ngio_tables(path, version)


def _ngio_tables(path: Path, version: str) -> Path:
    from ngio import ImageInWellPath, Roi, create_empty_plate, create_ome_zarr_from_array
    from ngio.tables import (
        ConditionTable,
        FeatureTable,
        GenericRoiTable,
        GenericTable,
        MaskingRoiTable,
        RoiTable,
    )

    with warnings.catch_warnings():
        _quiet()
        plate = create_empty_plate(
            store=str(path), name="t", ngff_version=version, overwrite=True,
            images=[ImageInWellPath(row=r, column=c, path=f) for r, c, f in FIELDS])
        for i, (r, c, f) in enumerate(FIELDS):
            img = create_ome_zarr_from_array(
                store=plate.get_image_store(row=r, column=c, image_path=f),
                array=np.full((1, 1, 16, 16), i, dtype=np.uint16), pixelsize=0.5,
                z_spacing=1.0, levels=1, axes_names=["c", "z", "y", "x"],
                ngff_version=version, overwrite=True)
            if (r, c, f) == ("A", "01", "0"):
                lbl = img.derive_label("nuclei", dtype="uint32", overwrite=True)
                lbl.set_array(np.arange(256, dtype=np.uint32).reshape(1, 16, 16) % 6)
                lbl.consolidate()
                rois = [Roi.from_values({"x": (0.0, 4.0), "y": (0.0, 4.0), "z": (0.0, 1.0)},
                                        name="FOV_1"),
                        Roi.from_values({"x": (2.0, 3.0), "y": (1.0, 2.0), "z": (0.0, 1.0)},
                                        name="FOV_2")]
                masks = [Roi.from_values({"x": (0.5, 1.0), "y": (0.5, 1.0), "z": (0.0, 1.0)},
                                         name=None, label=k) for k in (1, 2, 3)]
                for be in BACKENDS:
                    img.add_table(f"roi_{be}", RoiTable(rois), backend=be)
                    img.add_table(f"masking_{be}", MaskingRoiTable(
                        masks, reference_label="nuclei"), backend=be)
                    img.add_table(f"features_{be}", FeatureTable(
                        _features(7), reference_label="nuclei"), backend=be)
                    img.add_table(f"generic_{be}", GenericTable(
                        _features(8).set_index("label")), backend=be)
                    img.add_table(f"generic_roi_{be}", GenericRoiTable(rois=rois), backend=be)
            if (r, c, f) != ("B", "01", "0"):
                img.add_table("features", FeatureTable(_features(i)),
                              backend=BACKENDS[i % 3])  # anndata, parquet, csv
        cond = pd.DataFrame({"row": ["A", "A", "B"], "column": ["01", "02", "01"],
                             "drug": ["dmso", "taxol", "dmso"], "dose": [0.0, 1.5, 0.0]})
        for be in ("parquet", "anndata"):
            plate.add_table(f"conditions_{be}", ConditionTable(cond), backend=be)
    return path


@pytest.fixture(scope="session", params=["0.4", "0.5"])
def ngio_plate(request, tmp_path_factory) -> Path:
    return _ngio_plate(tmp_path_factory.mktemp(f"ngio{request.param}") / "p.zarr",
                       request.param)


def _ngio_df(path: Path, where: str, name: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        _quiet()
        plate = ngio.open_ome_zarr_plate(str(path))
        if where == "":
            return plate.get_table(name).dataframe
        r, c, f = where.split("/")
        return plate.get_image(r, c, f).get_table(name).dataframe


def _same(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Same values, columns, index and index name; string dtypes may be spelled differently."""
    assert list(ours.columns) == list(theirs.columns)
    assert ours.index.name == theirs.index.name
    assert [str(v) for v in ours.index] == [str(v) for v in theirs.index]
    for c in ours.columns:
        a, b = ours[c], theirs[c]
        if pd.api.types.is_bool_dtype(a) != pd.api.types.is_bool_dtype(b):
            # AnnData keeps booleans in X, as floats (ngio's format): compare as numbers
            np.testing.assert_array_equal(a.to_numpy(dtype=float), b.to_numpy(dtype=float))
        elif pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            np.testing.assert_allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float))
            assert pd.api.types.is_integer_dtype(a) == pd.api.types.is_integer_dtype(b), c
        else:
            assert [str(v) for v in a] == [str(v) for v in b], c


# -------------------------------------------------------------------------- reading ngio's


def test_every_ngio_table_reads_as_ngio_reads_it(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    names = dt.hcs.list_tables(path="A/01/0")
    for kind in ("roi", "masking", "features", "generic", "generic_roi"):
        for be in BACKENDS:
            name = f"{kind}_{be}"
            assert name in names
            _same(dt.hcs.table("A/01/0", name), _ngio_df(ngio_plate, "A/01/0", name))
    for be in ("parquet", "anndata"):
        name = f"conditions_{be}"
        assert name in dt.hcs.list_tables(path="")
        _same(dt.hcs.table("", name), _ngio_df(ngio_plate, "", name))


def test_table_metadata_is_in_the_tree(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    node = dt["A/01/0/tables/masking_parquet"]
    assert node.attrs["type"] == "masking_roi_table"
    assert node.attrs["backend"] == "parquet"
    assert node.attrs["region"] == {"path": "../labels/nuclei"}
    assert dt["A/01/0/tables"].attrs["tables"] == dt.hcs.list_tables(path="A/01/0")
    assert "conditions_parquet" in dt["tables"].attrs["tables"]
    # the tables are not read at open: the rows are in the store until asked for
    assert "ome_table" in node.encoding


def test_summary_lists_tables(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    text = dt.hcs.summary()
    assert "features (some fields)" in text and "roi_parquet (some fields)" in text
    assert "plate tables: conditions_parquet, conditions_anndata" in text
    one = dt.hcs.sel(wells=["A/02"])
    assert "tables:       features\n" in one.hcs.summary() + "\n"


def test_list_tables_modes(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    assert dt.hcs.list_tables() == []  # B/01/0 has none
    everything = dt.hcs.list_tables("all")
    assert everything[0] == "features" or "features" in everything
    assert "roi_json" in everything
    assert dt.hcs.sel(wells=["A/02"]).hcs.list_tables() == ["features"]
    with pytest.raises(ValueError, match="mode"):
        dt.hcs.list_tables("some")
    assert xr.open_datatree(ngio_plate, engine="ome-hcs", tables=False).hcs.list_tables(
        "all") == []


def test_remove_table_then_write(ngio_plate, tmp_path):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    names = dt.hcs.list_tables(path="A/01/0")
    less = dt.hcs.remove_table("A/01/0", "roi_json")
    assert less.hcs.list_tables(path="A/01/0") == [n for n in names if n != "roi_json"]
    assert "roi_json" in dt.hcs.list_tables(path="A/01/0")  # the input is untouched
    plate_less = less.hcs.remove_table("", "conditions_parquet")
    assert plate_less.hcs.list_tables(path="") == ["conditions_anndata"]
    out = tmp_path / "p.zarr"
    plate_less.hcs.to_zarr(out)
    back = xr.open_datatree(out, engine="ome-hcs")
    assert back.hcs.list_tables(path="A/01/0") == [n for n in names if n != "roi_json"]
    assert back.hcs.list_tables(path="") == ["conditions_anndata"]
    assert not (out / "A/01/0/tables/roi_json").exists()
    _same(back.hcs.table("A/01/0", "features_parquet"),
          dt.hcs.table("A/01/0", "features_parquet"))
    with pytest.raises(HcsSelectionError, match="has no table 'roi_json'"):
        less.hcs.remove_table("A/01/0", "roi_json")
    with pytest.raises(HcsSelectionError, match="no such node"):
        dt.hcs.remove_table("Z/09/0", "features")


def test_list_tables_of_a_kind(ngio_plate):
    """``kind`` filters by the tables' ``type``, as ngio's ``filter_types`` does."""
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    assert set(dt.hcs.list_tables("all", kind="roi_table")) == {f"roi_{be}" for be in BACKENDS}
    assert set(dt.hcs.list_tables("all", kind=["roi_table", "masking_roi_table"])) == {
        f"{k}_{be}" for k in ("roi", "masking") for be in BACKENDS}
    assert set(dt.hcs.list_tables("all", kind="feature_table")) == {
        "features", *(f"features_{be}" for be in BACKENDS)}
    assert dt.hcs.list_tables(kind="feature_table") == []  # B/01/0 has none
    assert dt.hcs.sel(wells=["A/02"]).hcs.list_tables(kind="feature_table") == ["features"]
    assert dt.hcs.sel(wells=["A/02"]).hcs.list_tables(kind="roi_table") == []
    assert set(dt.hcs.list_tables(path="", kind="condition_table")) == {
        "conditions_parquet", "conditions_anndata"}
    assert dt.hcs.list_tables(path="", kind="nothing_of_the_kind") == []


# -------------------------------------------------------------------------- concatenation


def test_concat_mixed_backends_and_missing_tables(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    with pytest.raises(HcsNotFoundError, match="B/01/0"):
        dt.hcs.concat_tables("features")
    df = dt.hcs.concat_tables("features", strict=False)
    assert len(df) == 3 * 5
    assert df.index.is_unique
    assert list(df.columns[:4]) == ["row", "column", "field", "label"]
    for i, (r, c, f) in enumerate(FIELDS[:3]):
        part = df[(df["row"] == r) & (df["column"] == c) & (df["field"] == f)]
        assert len(part) == 5
        # the values written into field i are labelled with field i, whatever its backend
        assert (part["area"] == float(i)).all()
        assert list(part.index) == [f"{r}_{c}_{f}_{k}" for k in range(1, 6)]
        assert list(part["label"]) == [1, 2, 3, 4, 5]
        assert list(part["cell_class"]) == [f"class{i}_{k % 2}" for k in range(5)]
    assert "B" not in set(df["row"])


def test_concat_matches_ngio(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs").hcs.sel(wells=["A/01", "A/02"])
    ours = dt.hcs.concat_tables("features")
    with warnings.catch_warnings():
        _quiet()
        plate = ngio.open_ome_zarr_plate(str(ngio_plate))
        theirs = plate.concatenate_image_tables("features", strict=False).dataframe
    assert len(ours) == len(theirs)
    for col in ("area", "mean_intensity", "n_spots"):
        np.testing.assert_allclose(np.sort(ours[col].to_numpy(float)),
                                   np.sort(theirs[col].to_numpy(float)))


def test_concat_keeps_acquisitions(plate_v05):
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    image = dt[f"{dt.hcs.field_paths[0]}/0"]["image"]
    dt = dt.hcs.add_image("A", "01", image, acquisition=1, acquisition_name="second")
    for fp in dt.hcs.field_paths:
        dt = dt.hcs.add_table(fp, "t", pd.DataFrame({"v": [1.0, 2.0]}))
    df = dt.hcs.concat_tables("t")
    assert "acquisition" in df.columns
    acq = dt.hcs.acquisitions[0].id
    one = dt.hcs.concat_tables("t", acquisition=acq)
    assert set(one["acquisition"]) == {acq}
    assert len(one) < len(df)


# -------------------------------------------------------------------------- writing


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_tables_round_trip_and_read_in_ngio(ngio_plate, tmp_path, version):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    extra = _features(3).set_index("label")
    for be in BACKENDS:
        dt = dt.hcs.add_table("A/02/0", f"new_{be}", extra, kind="feature_table", backend=be,
                              region="../labels/nuclei")
        dt = dt.hcs.add_table("A/02/0", f"rois_{be}", ROIS, kind="roi_table", backend=be)
    dt = dt.hcs.add_table("", "plate_notes", pd.DataFrame({"note": ["a", "b"]}),
                          backend="json")
    out = tmp_path / "out.zarr"
    dt.hcs.to_zarr(out, ngff_version=version)
    back = xr.open_datatree(out, engine="ome-hcs")
    assert back.hcs.list_tables("all") == dt.hcs.list_tables("all")
    assert back.hcs.list_tables(path="") == dt.hcs.list_tables(path="")
    # everything we read, we write back with the same rows
    for fp in dt.hcs.field_paths:
        for name in dt.hcs.list_tables(path=fp):
            a, b = dt.hcs.table(fp, name), back.hcs.table(fp, name)
            _same(b, a)
            assert back[f"{fp}/tables/{name}"].attrs["backend"] == dt[
                f"{fp}/tables/{name}"].attrs["backend"]
    # ngio reads what we wrote, with the same values
    for be in BACKENDS:
        _same(_ngio_df(out, "A/02/0", f"new_{be}"), back.hcs.table("A/02/0", f"new_{be}"))
        _same(_ngio_df(out, "A/02/0", f"rois_{be}"), back.hcs.table("A/02/0", f"rois_{be}"))
    _same(_ngio_df(out, "", "conditions_parquet"), back.hcs.table("", "conditions_parquet"))
    # unknown attributes of the table groups survive
    assert back["A/01/0/tables/features_anndata"].attrs.get("instance_key") == "label"


def test_selection_keeps_tables(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    sub = dt.hcs.sel(wells=["A/01"], fields=["0"], levels=[0])
    assert sub.hcs.list_tables(path="A/01/0") == dt.hcs.list_tables(path="A/01/0")
    assert sub.hcs.list_tables(path="") == dt.hcs.list_tables(path="")
    _same(sub.hcs.table("A/01/0", "features"), dt.hcs.table("A/01/0", "features"))


_values = st.one_of(
    st.tuples(st.just("f"), st.lists(st.floats(allow_nan=False, width=32), min_size=1,
                                     max_size=6)),
    st.tuples(st.just("i"), st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=6)),
    st.tuples(st.just("b"), st.lists(st.booleans(), min_size=1, max_size=6)),
    st.tuples(st.just("s"), st.lists(st.text("abcxyz _-é漢", min_size=1, max_size=5),
                                     min_size=1, max_size=6)),
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cols=st.lists(_values, min_size=1, max_size=4), backend=st.sampled_from(BACKENDS),
       version=st.sampled_from(["0.4", "0.5"]), str_index=st.booleans())
def test_random_tables_round_trip(plate_v05, tmp_path_factory, cols, backend, version,
                                  str_index):
    n = min(len(v) for _, v in cols)
    data = {f"{kind}{i}": values[:n] for i, (kind, values) in enumerate(cols)}
    df = pd.DataFrame(data)
    df.index = pd.Index([f"r{i}" for i in range(n)] if str_index else np.arange(n) + 10,
                        name="key")
    dt = xr.open_datatree(plate_v05, engine="ome-hcs", wells=["A/01"], fields=["0"],
                          levels=[0], labels=False)
    dt = dt.hcs.add_table("A/01/0", "t", df, backend=backend)
    out = tmp_path_factory.mktemp("rt") / "p.zarr"
    dt.hcs.to_zarr(out, ngff_version=version)
    back = xr.open_datatree(out, engine="ome-hcs").hcs.table("A/01/0", "t")
    expected = list(df.columns)
    if backend == "anndata":  # ngio's AnnData layout: floats and booleans (X), then obs
        expected = ([c for c in df.columns if c[0] in "fb"] +
                    [c for c in df.columns if c[0] in "is"])
    assert list(back.columns) == expected
    assert list(back.index) == list(df.index) and back.index.name == "key"
    for c in df.columns:
        if c.startswith(("f", "b")):  # AnnData holds booleans as 0.0 / 1.0
            np.testing.assert_allclose(back[c].to_numpy(float), df[c].to_numpy(float),
                                       rtol=1e-6 if backend in ("csv", "json") else 0)
        else:
            assert [str(v) for v in back[c]] == [str(v) for v in df[c]], c


# -------------------------------------------------------------------------- ROIs


def test_roi_selects_the_roi_pixels(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    level = dt["A/01/0/0"].to_dataset()
    step = float(level["x"][1] - level["x"][0])
    assert step == 0.5
    ds = dt.hcs.roi("A/01/0", "roi_parquet", "FOV_2")
    # x from 2.0 µm, 3.0 µm long, at 0.5 µm a pixel: pixels 4..9; y from 1.0, 2.0 long: 2..5
    assert ds.sizes["x"] == 6 and ds.sizes["y"] == 4
    np.testing.assert_array_equal(ds["image"].values,
                                  level["image"].isel(x=slice(4, 10), y=slice(2, 6)).values)
    assert float(ds["x"][0]) == float(level["x"][4])
    with pytest.raises(HcsSelectionError, match="FOV_9"):
        dt.hcs.roi("A/01/0", "roi_parquet", "FOV_9")
    with pytest.raises(HcsTableError, match="not a ROI table"):
        dt.hcs.roi("A/01/0", "features_parquet", 1)
    with pytest.raises(HcsSelectionError, match="level 5 does not exist"):
        dt.hcs.roi("A/01/0", "roi_parquet", "FOV_2", level=5)


# -------------------------------------------------------------------------- bad input


def _edit_attrs(path: Path, attrs_update: dict | None = None, replace: dict | None = None):
    """Change a group's attributes in place, in either zarr format."""
    if (path / "zarr.json").exists():
        doc = json.loads((path / "zarr.json").read_text())
        attrs = doc.setdefault("attributes", {})
        if replace is not None:
            doc["attributes"] = replace
        else:
            attrs.update(attrs_update or {})
        (path / "zarr.json").write_text(json.dumps(doc))
    else:
        attrs = json.loads((path / ".zattrs").read_text()) if (path / ".zattrs").exists() else {}
        if replace is not None:
            attrs = replace
        else:
            attrs.update(attrs_update or {})
        (path / ".zattrs").write_text(json.dumps(attrs))


@pytest.fixture
def broken(ngio_plate, tmp_path):
    p = tmp_path / "p.zarr"
    shutil.copytree(ngio_plate, p)
    return p


def test_tables_group_without_list(broken):
    _edit_attrs(broken / "A/02/0/tables", replace={"something": 1})
    with pytest.raises(HcsMetadataError, match=r"A/02/0/tables.*no 'tables' list"):
        xr.open_datatree(broken, engine="ome-hcs")
    _edit_attrs(broken / "A/02/0/tables", replace={})  # empty, as ngio creates them: no tables
    assert xr.open_datatree(broken, engine="ome-hcs").hcs.list_tables(path="A/02/0") == []


def test_listed_table_absent(broken):
    shutil.rmtree(broken / "A/02/0/tables/features")
    with pytest.raises(HcsNotFoundError, match=r"A/02/0/tables/features"):
        xr.open_datatree(broken, engine="ome-hcs")
    with pytest.warns(HcsMissingWarning, match="features"):
        dt = xr.open_datatree(broken, engine="ome-hcs", on_missing="warn")
    assert dt.hcs.list_tables(path="A/02/0") == []


def test_unknown_backend_and_bad_attrs(broken):
    _edit_attrs(broken / "A/02/0/tables/features", {"backend": "excel"})
    with pytest.raises(HcsMetadataError, match=r"A/02/0/tables/features.*unknown table backend"):
        xr.open_datatree(broken, engine="ome-hcs")
    _edit_attrs(broken / "A/02/0/tables/features", {"backend": "parquet", "index_type": "float"})
    with pytest.raises(HcsMetadataError, match="index_type"):
        xr.open_datatree(broken, engine="ome-hcs")


def test_unsafe_table_names(broken):
    _edit_attrs(broken / "A/02/0/tables", {"tables": ["../../../escape"]})
    with pytest.raises(HcsPathError, match="table name"):
        xr.open_datatree(broken, engine="ome-hcs")


def test_bad_rows_name_the_table(broken):
    # a csv table whose index repeats, a json table whose columns disagree in length
    (broken / "A/01/0/tables/features_csv/table.csv").write_text("label,area\n1,2.0\n1,3.0\n")
    tdir = broken / "A/01/0/tables/features_json/table"
    bad = {"label": [1, 2, 3], "area": [1.0]}
    _edit_attrs(tdir, replace=bad)
    (broken / "A/01/0/tables/roi_parquet/table.parquet").write_bytes(b"not parquet")
    dt = xr.open_datatree(broken, engine="ome-hcs")
    with pytest.raises(HcsTableError, match=r"features_csv.*not unique"):
        dt.hcs.table("A/01/0", "features_csv")
    with pytest.raises(HcsTableError, match=r"features_json.*different lengths"):
        dt.hcs.table("A/01/0", "features_json")
    with pytest.raises(HcsTableError, match=r"roi_parquet.*cannot be read"):
        dt.hcs.table("A/01/0", "roi_parquet")
    (broken / "A/01/1/tables/features/table.parquet").unlink()  # A/01/1's is parquet
    dt = xr.open_datatree(broken, engine="ome-hcs").hcs.sel(wells=["A/01", "A/02"])
    with pytest.raises(HcsNotFoundError, match=r"A/01/1/tables/features/table.parquet"):
        dt.hcs.concat_tables("features")


def test_unreadable_table_skipped_with_warning_when_not_strict(broken):
    (broken / "A/01/1/tables/features/table.parquet").write_bytes(b"junk")
    dt = xr.open_datatree(broken, engine="ome-hcs").hcs.sel(wells=["A/01", "A/02"])
    with pytest.raises(HcsTableError, match="A/01/1/tables/features"):
        dt.hcs.concat_tables("features")
    with pytest.warns(HcsMissingWarning, match="A/01/1/tables/features"):
        df = dt.hcs.concat_tables("features", strict=False)
    assert set(zip(df["row"], df["column"], df["field"])) == {("A", "01", "0"),
                                                               ("A", "02", "0")}


def test_add_table_bad_input(plate_v05, tmp_path):
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    fp = dt.hcs.field_paths[0]
    ok = pd.DataFrame({"v": [1.0, 2.0]})
    with pytest.raises(HcsTableError, match="not unique"):
        dt.hcs.add_table(fp, "t", pd.DataFrame({"v": [1, 2]}, index=[3, 3]))
    with pytest.raises(HcsPathError):
        dt.hcs.add_table(fp, "../t", ok)
    with pytest.raises(HcsPathError):
        dt.hcs.add_table(fp, "a/b", ok)
    with pytest.raises(HcsTableError, match="x_micrometer"):
        dt.hcs.add_table(fp, "r", ok, kind="roi_table")
    with pytest.raises(HcsMetadataError, match="unknown table backend"):
        dt.hcs.add_table(fp, "t", ok, backend="excel")
    with pytest.raises(HcsSelectionError, match="no such node"):
        dt.hcs.add_table("Z/99/0", "t", ok)
    with pytest.raises(HcsSelectionError, match="field"):
        dt.hcs.add_table(fp.rsplit("/", 1)[0], "t", ok)  # a well
    with pytest.raises(HcsSelectionError, match="field"):
        dt.hcs.add_table(f"{fp}/labels/nuclei", "t", ok)  # a label image
    with pytest.raises(HcsTableError, match="neither numeric nor strings"):
        dt.hcs.add_table(fp, "t", pd.DataFrame({"v": [object(), object()]}), backend="anndata")
    # AnnData's integer and string columns and its index are zarr nodes: names must be safe
    for cols, key in (({"a/b": [1, 2]}, "label"), ({"..": ["x", "y"]}, "label"),
                      ({5: [1, 2]}, "label"), ({"n": [1, 2]}, "../k"),
                      ({"__n": [1, 2]}, "label")):
        df = pd.DataFrame(cols, index=pd.Index([1, 2], name=key))
        with pytest.raises(HcsTableError, match=r"tables/t.*cannot be stored in an AnnData"):
            dt.hcs.add_table(fp, "t", df, backend="anndata")
        dt.hcs.add_table(fp, "t", df, backend="parquet")  # a file's columns: any names
    floats = pd.DataFrame({"a/b": [1.0, 2.0]}, index=pd.Index([1, 2], name="label"))
    dt.hcs.add_table(fp, "t", floats, backend="anndata")  # X columns are only var names
    two = dt.hcs.add_table(fp, "t", ok)
    with pytest.raises(HcsError, match="exists"):
        two.hcs.add_table(fp, "t", ok)
    three = two.hcs.add_table(fp, "t", ok * 2, overwrite=True)
    assert three.hcs.table(fp, "t")["v"].tolist() == [2.0, 4.0]
    assert two.hcs.table(fp, "t")["v"].tolist() == [1.0, 2.0]  # the old tree is untouched
    assert three.hcs.list_tables(path=fp) == ["t"]
    # nothing was written anywhere by any of this
    assert not list(tmp_path.iterdir())


def test_table_errors_on_unknown_names(ngio_plate):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    with pytest.raises(HcsSelectionError, match="no table 'nope'"):
        dt.hcs.table("A/01/0", "nope")
    with pytest.raises(HcsSelectionError, match="no such node"):
        dt.hcs.table("H/12/0", "features")


def test_public_names():
    assert xarray_hcs.HcsTableError is HcsTableError


# -------------------------------------------------------------------------- columns, batches


def test_columns_read_only_what_is_asked(ngio_plate, tmp_path):
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    for be in BACKENDS:
        full = dt.hcs.table("A/01/0", f"features_{be}")
        part = dt.hcs.table("A/01/0", f"features_{be}", columns=["cell_class", "area"])
        _same(part, full[["cell_class", "area"]])
        with pytest.raises(HcsSelectionError, match="no columns"):
            dt.hcs.table("A/01/0", f"features_{be}", columns=["nope"])
    # AnnData: X is not read when only obs columns are asked for
    p = tmp_path / "p.zarr"
    shutil.copytree(ngio_plate, p)
    xdir = p / "A/01/0/tables/features_anndata/X"
    for chunk in [f for f in xdir.rglob("*") if f.is_file() and not f.name.startswith(
            (".z", "zarr.json"))]:
        chunk.unlink()
    dt2 = xr.open_datatree(p, engine="ome-hcs")
    part = dt2.hcs.table("A/01/0", "features_anndata", columns=["cell_class"])
    assert list(part["cell_class"]) == list(
        dt.hcs.table("A/01/0", "features_anndata")["cell_class"])


@pytest.fixture
def parquet_plate(plate_v05, tmp_path) -> Path:
    """Every field with a parquet ``t`` table: concat reads them as one Arrow batch."""
    dt = xr.open_datatree(plate_v05, engine="ome-hcs")
    for i, fp in enumerate(dt.hcs.field_paths):
        dt = dt.hcs.add_table(fp, "t", _features(i).set_index("label"), kind="feature_table")
    out = tmp_path / "p.zarr"
    dt.hcs.to_zarr(out)
    return out


def test_concat_parquet_batch_equals_per_table_reads(parquet_plate):
    dt = xr.open_datatree(parquet_plate, engine="ome-hcs")
    df = dt.hcs.concat_tables("t")
    fields = dt.hcs.field_paths
    assert len(df) == 5 * len(fields)
    for i, fp in enumerate(fields):
        r, c, f = fp.split("/")
        part = df[(df["row"] == r) & (df["column"] == c) & (df["field"] == f)]
        one = dt.hcs.table(fp, "t")
        np.testing.assert_array_equal(part["area"].to_numpy(), one["area"].to_numpy())
        assert (part["area"] == float(i)).all()
        assert list(part["label"]) == list(one.index)
    sub = dt.hcs.concat_tables("t", columns=["area"])
    assert list(sub.columns) == ["row", "column", "field", "acquisition", "label", "area"]
    np.testing.assert_array_equal(sub["area"].to_numpy(), df["area"].to_numpy())
    with pytest.raises(HcsSelectionError, match="no columns"):
        dt.hcs.concat_tables("t", columns=["nope"])


def test_concat_parquet_batch_names_the_bad_table(parquet_plate):
    import pyarrow as pa
    import pyarrow.parquet as pq

    dt = xr.open_datatree(parquet_plate, engine="ome-hcs")
    bad = dt.hcs.field_paths[3]
    pq.write_table(pa.table({"label": [1, 1], "area": [1.0, 2.0]}),
                   parquet_plate / bad / "tables/t/table.parquet")
    dt = xr.open_datatree(parquet_plate, engine="ome-hcs")
    with pytest.raises(HcsTableError, match=rf"{bad}/tables/t.*not unique"):
        dt.hcs.concat_tables("t")
    with pytest.warns(HcsMissingWarning, match=rf"{bad}/tables/t"):
        df = dt.hcs.concat_tables("t", strict=False)
    assert len(df) == 5 * (len(dt.hcs.field_paths) - 1)
    assert bad.split("/")[2] in set(df["field"])  # the other wells' fields are all there
    assert not ((df["row"] + "/" + df["column"] + "/" + df["field"]) == bad).any()


# ------------------------------------------------------------- the direct AnnData encoder


def _read_with_anndata(docs: dict[str, bytes], zarr_format: int):
    """What AnnData itself reads from these table files."""
    import anndata as ad
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    store = MemoryStore()
    proto = default_buffer_prototype()
    store._store_dict.update({k: proto.buffer.from_bytes(v) for k, v in docs.items()})
    group = zarr.open_group(store, mode="r", zarr_format=zarr_format, use_consolidated=False)
    return ad.io.read_elem(group), dict(group.attrs)


@settings(max_examples=40, deadline=None)
@given(cols=st.lists(_values, min_size=0, max_size=4), zarr_format=st.sampled_from([2, 3]),
       index=st.sampled_from(["named", "unnamed", "strings"]),
       rows=st.sampled_from([None, 0]))
def test_direct_anndata_encoding_reads_in_anndata_as_anndata_writes_it(cols, zarr_format,
                                                                      index, rows):
    """What ``_anndata_write`` encodes, AnnData reads back equal to what AnnData wrote."""
    from xarray_hcs.tables import TableMeta, table_documents

    n = 0 if rows == 0 or not cols else min(len(v) for _, v in cols)
    df = pd.DataFrame({f"{kind}{i}": values[:n] for i, (kind, values) in enumerate(cols)},
                      index=pd.RangeIndex(n))
    if index == "named":
        df.index = pd.Index(np.arange(n) + 1, name="label")
    elif index == "strings":
        df.index = pd.Index([f"cell {i}" for i in range(n)], name="id")
    meta = TableMeta("feature_table", "anndata", "1", None, None, None, None)
    docs = table_documents(df, meta, zarr_format, "/t")
    assert not any(k.startswith("raw") for k in docs)  # the direct encoder wrote them
    ours, attrs = _read_with_anndata(docs, zarr_format)
    assert attrs["type"] == "feature_table" and attrs["encoding-type"] == "anndata"
    # AnnData's own writing of the same table: the direct encoder declines, for this call
    import xarray_hcs._anndata_write as direct
    import xarray_hcs.tables as tables

    real = direct.anndata_documents
    direct.anndata_documents = lambda *a, **k: None
    try:
        theirs_docs = tables._anndata_documents(df, meta, zarr_format, "/t")
    finally:
        direct.anndata_documents = real
    assert any(k.startswith("raw") for k in theirs_docs)  # AnnData's writer wrote these
    theirs, _ = _read_with_anndata(theirs_docs, zarr_format)
    np.testing.assert_array_equal(ours.X, theirs.X)
    assert ours.X.dtype == theirs.X.dtype
    pd.testing.assert_frame_equal(ours.obs, theirs.obs)
    pd.testing.assert_frame_equal(ours.var, theirs.var)
    assert ours.obs.index.name == theirs.obs.index.name


def test_anndata_tables_that_need_anndata_are_written_by_it(tmp_path, plate_v05):
    """Integers with missing values become floats in ``obs``, which the direct encoder
    leaves to AnnData: they still round-trip."""
    from xarray_hcs._anndata_write import anndata_documents

    obs = pd.DataFrame({"count": [1.0, np.nan, 3.0]}, index=pd.Index(["1", "2", "3"]))
    assert anndata_documents(np.zeros((3, 0)), [], obs, {}, 3) is None
    df = pd.DataFrame({"count": pd.array([1, None, 3], dtype="Int64"),
                       "area": [1.0, 2.0, 3.0]}, index=pd.Index([1, 2, 3], name="label"))
    dt = xr.open_datatree(plate_v05, engine="ome-hcs", wells=["A/01"], fields=["0"],
                          levels=[0], labels=False)
    dt = dt.hcs.add_table("A/01/0", "t", df, backend="anndata")
    out = tmp_path / "p.zarr"
    dt.hcs.to_zarr(out)
    back = xr.open_datatree(out, engine="ome-hcs").hcs.table("A/01/0", "t")
    assert back["count"].isna().tolist() == [False, True, False]
    assert back["count"].dropna().astype(int).tolist() == [1, 3]
    np.testing.assert_array_equal(back["area"].to_numpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_direct_anndata_encoding_of_a_table_of_many_chunks(zarr_format):
    """A table larger than one chunk: row chunks, the last padded, read back whole."""
    from xarray_hcs._anndata_write import _CHUNK_BYTES
    from xarray_hcs.tables import TableMeta, table_documents

    n = _CHUNK_BYTES // 8 + 1000  # X's float64 rows: two chunks, the second short
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"area": rng.random(n), "n": rng.integers(0, 9, n),
                       "kind": np.where(rng.random(n) > 0.5, "a", "b")},
                      index=pd.Index(np.arange(n), name="label"))
    meta = TableMeta("feature_table", "anndata", "1", "label", "int", None, None)
    docs = table_documents(df, meta, zarr_format, "/t")
    sep, pre = (".", "") if zarr_format == 2 else ("/", "c/")
    assert f"X/{pre}1{sep}0" in docs and f"X/{pre}2{sep}0" not in docs
    ours, _ = _read_with_anndata(docs, zarr_format)
    np.testing.assert_array_equal(ours.X[:, 0], df["area"].to_numpy())
    np.testing.assert_array_equal(ours.obs["n"].to_numpy(), df["n"].to_numpy())
    assert ours.obs["kind"].astype(str).tolist() == df["kind"].tolist()
    assert ours.obs.index.tolist() == [str(i) for i in range(n)]


# ------------------------------------------------------------ Fractal v1 tables beside ngio's


@pytest.fixture(scope="module")
def fractal_plate(tmp_path_factory) -> Path:
    """B/03/0: a Fractal v1 feature table written by AnnData itself (no backend, no index_key,
    instance_key "label", labels as strings in obs, obs_names "0".."2", a one-category
    categorical, obsm and layers); B/04/0: the same kind of table written by ngio; a
    plate-level condition table (strings in obs)."""
    import anndata as ad
    import zarr

    _quiet()
    root = tmp_path_factory.mktemp("fractal") / "plate.zarr"
    g = zarr.open_group(root, mode="w", zarr_format=2)
    g.attrs.put({"plate": {"version": "0.4", "rows": [{"name": "B"}],
                           "columns": [{"name": "03"}, {"name": "04"}],
                           "wells": [{"path": "B/03", "rowIndex": 0, "columnIndex": 0},
                                     {"path": "B/04", "rowIndex": 0, "columnIndex": 1}]}})
    yx = [{"name": "y", "type": "space", "unit": "micrometer"},
          {"name": "x", "type": "space", "unit": "micrometer"}]
    for w in ("B/03", "B/04"):
        wg = g.require_group(w)
        wg.attrs.put({"well": {"version": "0.4", "images": [{"path": "0"}]}})
        fg = wg.require_group("0")
        fg.attrs.put({"multiscales": [{"version": "0.4", "axes": [
            {"name": "c", "type": "channel"}, *yx], "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale",
                                                        "scale": [1.0, 1.0, 1.0]}]}]}],
            "omero": {"channels": [{"label": "DAPI", "color": "0000FF", "window": {
                "min": 0, "max": 65535, "start": 0, "end": 4000}}]}})
        fg.create_array("0", shape=(1, 16, 16), dtype="uint16", chunks=(1, 16, 16))[:] = 5
        lg = fg.require_group("labels")
        lg.attrs.put({"labels": ["nuclei"]})
        ng = lg.require_group("nuclei")
        ng.attrs.put({"image-label": {"version": "0.4"}, "multiscales": [{
            "version": "0.4", "axes": yx, "datasets": [{"path": "0", "coordinateTransformations":
                                                       [{"type": "scale",
                                                         "scale": [1.0, 1.0]}]}]}]})
        ng.create_array("0", shape=(16, 16), dtype="uint32", chunks=(16, 16))[:] = 1
    old = ad.settings.zarr_write_format
    ad.settings.zarr_write_format = 2
    strings = pd.option_context("future.infer_string", False)  # AnnData of Fractal's day
    strings.__enter__()
    try:
        x = np.array([[10, 1.5], [20, 2.5], [30, 3.5]], dtype="float32")
        # object strings, as the AnnData of Fractal's day wrote them (pandas 3 would infer
        # its Arrow strings from plain lists)
        index = pd.Index(["0", "1", "2"], dtype=object)
        obs = pd.DataFrame({"label": pd.Series(["1", "2", "3"], index=index, dtype=object),
                            "condition": pd.Series(["ctrl"] * 3, index=index, dtype=object)},
                           index=index)
        adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(
            ["area", "mean_dapi"], dtype=object)))
        adata.obsm["spatial"] = np.arange(6, dtype=float).reshape(3, 2)
        adata.layers["raw"] = x * 2
        g.require_group("B/03/0/tables").attrs.put({"tables": ["nuclei"]})
        adata.write_zarr(str(root / "B/03/0/tables/nuclei"))
        zarr.open_group(root / "B/03/0/tables/nuclei", mode="r+").attrs.update({
            "type": "feature_table", "fractal_table_version": "1",
            "region": {"path": "../labels/nuclei"}, "instance_key": "label"})
        two = pd.Index(["0", "1"], dtype=object)
        cond = ad.AnnData(X=np.array([[0.0], [5.0]], dtype="float32"), obs=pd.DataFrame(
            {c: pd.Series(v, index=two, dtype=object) for c, v in (
                ("row", ["B", "B"]), ("column", ["03", "04"]), ("drug", ["DMSO", "taxol"]))},
            index=two),
            var=pd.DataFrame(index=pd.Index(["concentration_uM"], dtype=object)))
        g.require_group("tables").attrs.put({"tables": ["condition"]})
        cond.write_zarr(str(root / "tables/condition"))
        zarr.open_group(root / "tables/condition", mode="r+").attrs.update({
            "type": "condition_table", "fractal_table_version": "1"})
    finally:
        ad.settings.zarr_write_format = old
        strings.__exit__(None, None, None)
    from ngio.tables import FeatureTable

    labels = pd.Index([1, 2, 3, 4], name="label")
    df = pd.DataFrame({"area": [40.0, 50.0, 60.0, 70.0], "mean_dapi": [4.5, 5.5, 6.5, 7.5],
                       "condition": pd.Series(["drug"] * 4, index=labels, dtype=object)},
                      index=labels)
    pl = ngio.open_ome_zarr_plate(str(root), mode="r+")
    pl.get_image("B", "04", "0").add_table(
        "nuclei", FeatureTable(df, reference_label="nuclei"), backend="anndata")
    return root


def test_fractal_v1_feature_table_reads_as_ngio_reads_it(fractal_plate):
    _quiet()
    dt = xr.open_datatree(fractal_plate, engine="ome-hcs")
    t3 = dt.hcs.table("B/03/0", "nuclei")
    ref = ngio.open_ome_zarr_plate(str(fractal_plate)).get_image("B", "03", "0").get_table(
        "nuclei").dataframe
    assert t3.index.name == ref.index.name == "label"
    assert t3.index.tolist() == ref.index.tolist() == [1, 2, 3]
    assert pd.api.types.is_integer_dtype(t3.index)
    assert t3["area"].tolist() == [10, 20, 30]
    assert [str(v) for v in t3["condition"]] == ["ctrl"] * 3


def test_concat_of_fractal_and_ngio_tables_keeps_one_meaning_per_column(fractal_plate, tmp_path):
    _quiet()
    dt = xr.open_datatree(fractal_plate, engine="ome-hcs")
    cells = dt.hcs.concat_tables("nuclei")
    assert list(cells.columns[:4]) == ["row", "column", "field", "label"]
    assert "index" not in cells.columns
    assert cells["label"].tolist() == [1, 2, 3, 1, 2, 3, 4]
    assert cells.groupby("column")["area"].sum().to_dict() == {"03": 60.0, "04": 220.0}
    per = cells.groupby("column")["condition"].agg(lambda s: sorted(set(map(str, s))))
    assert per.to_dict() == {"03": ["ctrl"], "04": ["drug"]}
    plate = dt.hcs.table("", "condition")
    assert [str(v) for v in plate["drug"]] == ["DMSO", "taxol"]
    assert plate["concentration_uM"].tolist() == [0.0, 5.0]
    for v in ("0.4", "0.5"):
        dt.hcs.to_zarr(tmp_path / f"{v}.zarr", ngff_version=v)
        back = xr.open_datatree(tmp_path / f"{v}.zarr", engine="ome-hcs")
        again = back.hcs.concat_tables("nuclei")
        pd.testing.assert_frame_equal(again.astype(str), cells.astype(str))
        assert [str(x) for x in back.hcs.table("", "condition")["drug"]] == ["DMSO", "taxol"]


def test_concat_of_tables_with_different_index_keys_gives_each_its_column(ngio_plate):
    """Two tables of one name indexed by different keys: each key is a column of its own
    (empty for the other table's rows), never one column with two meanings."""
    dt = xr.open_datatree(ngio_plate, engine="ome-hcs")
    fps = dt.hcs.field_paths[:2]
    a = pd.DataFrame({"area": [1.0, 2.0]}, index=pd.Index([1, 2], name="label"))
    b = pd.DataFrame({"area": [3.0]}, index=pd.Index(["cell9"], name="cell_id"))
    dt = dt.hcs.add_table(fps[0], "mix", a).hcs.add_table(fps[1], "mix", b)
    out = dt.hcs.concat_tables("mix", strict=False)
    assert out["label"].tolist()[:2] == [1, 2] and pd.isna(out["label"].iloc[2])
    assert pd.isna(out["cell_id"].iloc[0]) and out["cell_id"].iloc[2] == "cell9"
    clash = pd.DataFrame({"row": ["Z"], "area": [1.0]}, index=pd.Index([1], name="label"))
    dt2 = dt.hcs.add_table(fps[0], "clash", clash).hcs.add_table(fps[1], "clash", clash)
    with pytest.raises(HcsTableError, match="column 'row'"):
        dt2.hcs.concat_tables("clash", strict=False)
