"""On-disk editing: add_image and remove_image from many processes at once, writers killed at
each step of their work (events, not timing: tests/_faults.py), and the lock-free
plan-then-fill pair."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import xarray_hcs
from xarray_hcs.errors import (
    HcsError,
    HcsMetadataError,
    HcsNotAPlateError,
    HcsNotFoundError,
    HcsPathError,
)

WRITER = Path(__file__).parent / "_writer_proc.py"


def _img(value: int = 1, shape=(2, 1, 16, 16), dtype: str = "uint16") -> xr.DataArray:
    return xr.DataArray(np.full(shape, value, dtype=dtype), dims=("c", "z", "y", "x"),
                        coords={"c": ["DAPI", "GFP"][:shape[0]],
                                "x": np.arange(shape[-1]) * 0.5,
                                "y": np.arange(shape[-2]) * 0.5})


def _consistent(plate: Path) -> xr.DataTree:
    """The plate opens strictly, and every listed image's every level is readable."""
    dt = xr.open_datatree(plate, engine="ome-hcs", validate=True)
    for fp in dt.hcs.field_paths:
        for lv in dt[fp].children:
            if lv != "labels":
                assert dt[f"{fp}/{lv}"]["image"].values.min() > 0, fp
    return dt


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_add_image_creates_and_extends_a_plate(tmp_path, version):
    p = tmp_path / "plate.zarr"
    assert xarray_hcs.add_image(p, "B", 3, _img(5), ngff_version=version,
                                name="screen 1", levels=2) == "B/3/0"
    assert xarray_hcs.add_image(p, "B", "3", _img(6)) == "B/3/1"
    lab = xr.DataArray(np.ones((1, 16, 16), "uint32"), dims=("z", "y", "x"))
    assert xarray_hcs.add_image(p, "A", 10, _img(7), acquisition=2, acquisition_name="late",
                                labels={"nuclei": lab}) == "A/10/0"
    dt = _consistent(p)
    assert dt.hcs.version == version
    assert dt.hcs.rows == ["A", "B"] and dt.hcs.columns == ["3", "10"]
    assert dt.hcs.field_paths == ["A/10/0", "B/3/0", "B/3/1"]
    assert [(a.id, a.name) for a in dt.hcs.acquisitions] == [(2, "late")]
    assert int(dt["B/3/1/0"]["image"].max()) == 6
    assert list(dt["A/10/0/labels"].children) == ["nuclei"]
    assert dt.attrs["ome"]["plate"]["name"] == "screen 1"
    # level 1: 2x2 means, so pixel centres move by half a level-0 pixel
    np.testing.assert_allclose(dt["B/3/0/1"].to_dataset().x.values[:2], [0.25, 1.25])


def test_add_image_into_a_read_plate_keeps_its_style(fresh_plate):
    p = fresh_plate("0.5")
    path = xarray_hcs.add_image(p, "C", 4, _img(9, (2, 1, 16, 16)))
    assert path == "C/04/0"  # the plate's zero-padded columns
    dt = _consistent(p)
    assert len(dt[path].children) == 2  # as many levels as the plate's fields


def test_add_image_bad_input(tmp_path, fresh_plate):
    p = fresh_plate("0.5")
    with pytest.raises(HcsMetadataError, match="already has a field '0'"):
        xarray_hcs.add_image(p, "A", 1, _img(), field="0")
    with pytest.raises(HcsError, match="alphanumeric"):
        xarray_hcs.add_image(p, "A/../..", 1, _img())
    with pytest.raises(HcsError, match="alphanumeric"):
        xarray_hcs.add_image(p, "A", 1, _img(), field="../x")
    bad = _img().rename({"z": "q"})
    with pytest.raises(HcsMetadataError, match="not among"):
        xarray_hcs.add_image(p, "A", 1, bad)
    before = sorted(str(x) for x in tmp_path.rglob("*"))
    with pytest.raises(HcsError, match="cross-process lock"):
        xarray_hcs.add_image(zarr.storage.MemoryStore(), "A", 1, _img())
    assert sorted(str(x) for x in tmp_path.rglob("*")) == before
    mem = zarr.storage.MemoryStore()
    assert xarray_hcs.add_image(mem, "A", 1, _img(), lock=False) == "A/1/0"
    assert xarray_hcs.open_plate(mem).hcs.field_paths == ["A/1/0"]


def test_eight_processes_add_two_hundred_images(tmp_path):
    p = tmp_path / "plate.zarr"
    xarray_hcs.add_image(p, "A", 1, _img(1), levels=2)  # the plate exists before the race
    procs = [subprocess.Popen([sys.executable, str(WRITER), str(p), str(w), "25"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for w in range(1, 9)]
    for pr in procs:
        out, err = pr.communicate(timeout=600)
        assert pr.returncode == 0, err.decode()[-2000:]
    dt = _consistent(p)
    assert len(dt.hcs.field_paths) == 201
    seen = sorted(int(dt[f"{fp}/0"]["image"].values.flat[0]) for fp in dt.hcs.field_paths)
    assert seen == sorted([1] + [w * 1000 + i + 1 for w in range(1, 9) for i in range(25)])
    counts = {w: len(dt[w].attrs["ome"]["well"]["images"]) for w in dt.hcs.wells}
    assert sum(counts.values()) == 201 and set(dt.hcs.wells) == {"A/1", "A/2", "B/1", "B/2"}


FAULTS = Path(__file__).parent / "_faults.py"


def _changes(*args: str) -> int:
    """How many file-system changes the edit makes (run once, not killed)."""
    r = subprocess.run([sys.executable, str(FAULTS), "0", *args], capture_output=True,
                       text=True, check=True)
    return int(r.stdout.split("changes ")[-1])


def _kill_points(total: int, most: int = 24) -> list[int]:
    """Where to kill an edit of ``total`` changes: every one, or ``most`` spread over them
    (the first and the last among them)."""
    if total <= most:
        return list(range(1, total + 1))
    return sorted({1 + round(i * (total - 1) / (most - 1)) for i in range(most)})


def _killed(n: int, *args: str) -> None:
    r = subprocess.run([sys.executable, str(FAULTS), str(n), *args], capture_output=True,
                       text=True)
    assert r.returncode == 137, (n, r.stderr[-2000:])  # killed where asked, not before


@pytest.mark.parametrize("into", ["a new well in a new row", "a well it has"])
def test_an_adder_killed_at_each_of_its_changes_leaves_a_consistent_plate(tmp_path, into):
    """Killed at its Nth change to the store, for N over every step of an add, a writer
    leaves a plate that opens strictly and lists only complete images: nothing listed
    before is lost, nothing half-written is listed."""
    p = tmp_path / "plate.zarr"
    xarray_hcs.add_image(p, "A", 1, _img(1), levels=2)
    probe = tmp_path / "probe.zarr"
    xarray_hcs.add_image(probe, "A", 1, _img(1), levels=2)
    new = into.startswith("a new")
    total = _changes("add", str(probe), *(("C", "7") if new else ("A", "1")), "2")
    listed = {fp: 1 for fp in xarray_hcs.open_plate(p).hcs.field_paths}
    for i, n in enumerate(_kill_points(total, 16)):
        well = (chr(ord("C") + i), "7") if new else ("A", "1")
        _killed(n, "add", str(p), *well, str(100 + i))
        dt = _consistent(p)
        now = {fp: int(dt[f"{fp}/0"]["image"].values.flat[0]) for fp in dt.hcs.field_paths}
        assert {fp: v for fp, v in now.items() if fp in listed} == listed  # nothing lost
        assert all(v == 100 + i or fp in listed for fp, v in now.items())
        listed = now
    assert xarray_hcs.add_image(p, "A", 1, _img(3)).startswith("A/1/")  # still takes more


@pytest.mark.parametrize("which", ["a well's last field", "one of many"])
def test_a_remover_killed_at_each_of_its_changes_leaves_a_consistent_plate(tmp_path, which):
    last = which.startswith("a well's")
    layout = {f"{r}/{c}": 1 for r in "ABCD" for c in range(1, 5)} if last else {"A/1": 24}
    p = tmp_path / "plan.zarr"
    fields = xarray_hcs.create_plate(p, layout, _img(), levels=2)
    for i, f in enumerate(fields):
        xarray_hcs.write_field(p, f, _img(i + 1))
    value = {f: i + 1 for i, f in enumerate(fields)}
    probe = tmp_path / "probe.zarr"
    xarray_hcs.create_plate(probe, {"B/2": 1 if last else 2}, _img(), levels=2)
    xarray_hcs.write_field(probe, "B/2/0", _img(1))
    total = _changes("remove", str(probe), "B", "2", "0")
    for i, n in enumerate(_kill_points(total, 16)):
        _killed(n, "remove", str(p), *fields[i].split("/"))
        dt = _consistent(p)
        for fp in dt.hcs.field_paths:  # every field still listed holds its own pixels
            assert int(dt[f"{fp}/0"]["image"].values.flat[0]) == value[fp]
        assert set(dt.hcs.field_paths) >= set(fields[i + 1:])  # the others all remain


def _fill(args: tuple[str, str, int]) -> str:
    plate, field, value = args
    xarray_hcs.write_field(plate, field, _img(value),
                           labels={"nuclei": xr.DataArray(np.full((1, 16, 16), value, "uint32"),
                                                          dims=("z", "y", "x"))})
    return field


def test_plan_then_fill_from_worker_processes(tmp_path):
    p = tmp_path / "plan.zarr"
    wells = {f"{r}/{c}": 3 for r in "AB" for c in ("01", "02", "03")}
    fields = xarray_hcs.create_plate(p, wells, _img(), levels=2, labels={"nuclei": "uint32"},
                                     acquisition=1, acquisition_name="run")
    assert len(fields) == 18 and fields[0] == "A/01/0"
    planned = xr.open_datatree(p, engine="ome-hcs", validate=True)
    assert planned.hcs.field_paths == fields  # the plan is a valid, complete plate
    # spawn, not fork: forking a process that runs zarr's event-loop thread can deadlock
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as ex:
        done = list(ex.map(_fill, [(str(p), f, i + 1) for i, f in enumerate(fields)]))
    assert done == fields
    dt = _consistent(p)
    for i, f in enumerate(fields):
        assert int(dt[f"{f}/1"]["image"].min()) == i + 1
        assert int(dt[f"{f}/labels/nuclei/0"]["labels"].max()) == i + 1
    with pytest.raises(HcsMetadataError, match="the plan has"):
        xarray_hcs.write_field(p, fields[0], _img(1, (2, 1, 8, 8)))
    with pytest.raises(HcsNotFoundError, match="not a planned image"):
        xarray_hcs.write_field(p, "Z/9/0", _img())


# ------------------------------------------------------------------------ remove_image


def _files(p: Path) -> dict[str, bytes]:
    """Every file of the plate but the lock file (which the lock leaves, empty)."""
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*"))
            if f.is_file() and f.name != xarray_hcs.ondisk.LOCK_NAME}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_remove_image_unlists_then_deletes(tmp_path, version):
    p = tmp_path / "plate.zarr"
    for row, col, value in (("A", 1, 1), ("A", 1, 2), ("A", 1, 3), ("B", 2, 4)):
        xarray_hcs.add_image(p, row, col, _img(value), ngff_version=version, levels=2)
    assert xarray_hcs.remove_image(p, "A", 1, "1") == "A/1/1"
    dt = _consistent(p)
    assert dt.hcs.field_paths == ["A/1/0", "A/1/2", "B/2/0"]
    assert not (p / "A/1/1").exists() and (p / "A/1/2").exists()
    assert int(dt["A/1/2/0"]["image"].max()) == 3  # the others keep their pixels
    # the last field of a well: the plate stops listing the well, its rows and columns stay
    assert xarray_hcs.remove_image(p, "B", "2", "0") == "B/2/0"
    dt = _consistent(p)
    assert dt.hcs.wells == ["A/1"] and not (p / "B/2").exists()
    assert dt.hcs.rows == ["A", "B"] and dt.hcs.columns == ["1", "2"]
    # the plate takes images again where they were removed
    assert xarray_hcs.add_image(p, "B", 2, _img(5)) == "B/2/0"
    assert _consistent(p).hcs.field_paths == ["A/1/0", "A/1/2", "B/2/0"]


def test_remove_image_without_deleting_and_in_a_read_plate(fresh_plate):
    p = fresh_plate("0.5")
    dt = xr.open_datatree(p, engine="ome-hcs")
    first = dt.hcs.field_paths[0]
    row, col, field = first.split("/")
    assert xarray_hcs.remove_image(p, row, int(col), field, delete=False) == first
    after = _consistent(p)
    assert first not in after.hcs.field_paths
    assert len(after.hcs.field_paths) == len(dt.hcs.field_paths) - 1
    assert (p / first / "zarr.json").exists()  # unlisted, kept
    assert after.attrs["ome"]["plate"]["field_count"] == 2  # other wells still hold 2


def test_remove_image_keeps_field_count_true(fresh_plate):
    p = fresh_plate("0.4")
    dt = xr.open_datatree(p, engine="ome-hcs")
    assert dt.attrs["ome"]["plate"]["field_count"] == 2
    for w in dt.hcs.wells:  # every well down to one field: the most any well has is 1
        row, col = w.split("/")
        xarray_hcs.remove_image(p, row, col, "1")
    after = _consistent(p)
    assert after.attrs["ome"]["plate"]["field_count"] == 1
    assert after.hcs.field_paths == [f"{w}/0" for w in dt.hcs.wells]


def test_remove_image_bad_input_changes_nothing(tmp_path, fresh_plate):
    p = fresh_plate("0.5")
    before = _files(p)
    with pytest.raises(HcsNotFoundError, match=r"lists no well 'Z/01'"):
        xarray_hcs.remove_image(p, "Z", 1, "0")
    with pytest.raises(HcsNotFoundError, match=r"A/01.*lists no field '9'"):
        xarray_hcs.remove_image(p, "A", 1, "9")
    for row, col, field in (("A", 1, "../x"), ("A/../..", 1, "0"), ("A", "..", "0"),
                            ("A", 1, "/etc"), ("A", 1, "")):
        with pytest.raises(HcsPathError, match="unsafe|absolute|non-empty|component"):
            xarray_hcs.remove_image(p, row, col, field)
    assert _files(p) == before
    empty = tmp_path / "empty.zarr"
    zarr.open_group(empty, mode="w")
    with pytest.raises(HcsNotAPlateError, match="no plate"):
        xarray_hcs.remove_image(empty, "A", 1, "0")
    assert sorted(f.name for f in empty.iterdir()) == ["zarr.json"]  # no lock file either
    with pytest.raises(HcsNotAPlateError):
        xarray_hcs.remove_image(tmp_path / "nothing.zarr", "A", 1, "0")
    assert not (tmp_path / "nothing.zarr").exists()


RACE = Path(__file__).parent / "_race.py"
RUNS = 20


def test_adders_removers_and_readers_at_once_lose_nothing(tmp_path):
    """8 adders, 2 removers and 2 readers on one plate, in shared wells, 20 races: every
    added image is listed with its pixels, every removed one is gone, nothing else changed,
    and the readers never read a wrong value or an error outside the HcsError family."""
    import json

    initial: dict[int, dict[str, int]] = {}
    for r in range(RUNS):
        run = tmp_path / f"run-{r}"
        run.mkdir()
        fields = xarray_hcs.create_plate(run / "plate.zarr", {"A/1": 3, "A/2": 3, "B/1": 2},
                                         _img(shape=(1, 1, 8, 8), dtype="uint32"),
                                         levels=1)
        values = {f: 10 + i for i, f in enumerate(fields)}
        for f, v in values.items():
            xarray_hcs.write_field(run / "plate.zarr", f,
                                   _img(v, shape=(1, 1, 8, 8), dtype="uint32"))
        # remover 0 takes one field of each shared well, remover 1 both of B/1 (its last)
        (run / "remove-0.json").write_text(json.dumps(["A/1/0", "A/2/1"]))
        (run / "remove-1.json").write_text(json.dumps(["B/1/0", "B/1/1"]))
        (run / "values.json").write_text(json.dumps(values))
        initial[r] = values
    roles = ([("adder", i) for i in range(8)] + [("remover", j) for j in range(2)]
             + [("reader", k) for k in range(2)])
    procs = [subprocess.Popen([sys.executable, str(RACE), role, str(i), str(tmp_path),
                               str(RUNS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for role, i in roles]
    reports = []
    for pr in procs:
        out, err = pr.communicate(timeout=1800)
        assert pr.returncode == 0, err[-3000:]
        reports += [json.loads(line) for line in out.splitlines()]
    assert sum(r["looks"] for r in reports if r["role"] == "reader") >= 2 * RUNS
    for r in range(RUNS):
        mine = [rep for rep in reports if rep["run"] == r]
        for rep in mine:
            assert not rep.get("problems"), (r, rep["problems"][:5])
        added = {fp: v for rep in mine for fp, v in rep.get("added", {}).items()}
        removed = {fp for rep in mine for fp in rep.get("removed", [])}
        assert len(added) == 16 and removed == {"A/1/0", "A/2/1", "B/1/0", "B/1/1"}
        dt = _consistent(tmp_path / f"run-{r}" / "plate.zarr")
        now = {fp: int(dt[f"{fp}/0"]["image"].values.flat[0]) for fp in dt.hcs.field_paths}
        expected = {fp: v for fp, v in initial[r].items() if fp not in removed} | added
        assert now == expected, r


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_edits_of_a_consolidated_plate_drop_its_stale_index(tmp_path, version):
    """A root's consolidated metadata would go on listing a removed field (read as zeros)
    and hide an added one: add_image and remove_image drop it first."""
    p = tmp_path / "plate.zarr"
    for i in range(3):
        xarray_hcs.add_image(p, "A", 1, _img(i + 1), ngff_version=version, levels=1)
    fmt = 2 if version == "0.4" else 3
    with pytest.warns(UserWarning):  # zarr: the lock file is no zarr node; v3 consolidation
        zarr.consolidate_metadata(str(p), zarr_format=fmt)
    xarray_hcs.remove_image(p, "A", 1, "1")
    assert _consistent(p).hcs.field_paths == ["A/1/0", "A/1/2"]
    with pytest.warns(UserWarning):
        zarr.consolidate_metadata(str(p), zarr_format=fmt)
    xarray_hcs.add_image(p, "A", 1, _img(9))
    dt = _consistent(p)
    assert sorted(dt.hcs.field_paths) == ["A/1/0", "A/1/1", "A/1/2"]
    assert int(dt["A/1/1/0"]["image"].max()) == 9
    with pytest.raises(HcsNotFoundError, match="no consolidated metadata"):
        xarray_hcs.open_plate(p, consolidated=True)


def test_every_pyramid_the_library_builds_puts_level_pixels_in_one_place(tmp_path):
    """The sample writer and add_image follow one rule (ngff-zarr's and ome-zarr-py's): an
    image level's pixel is the mean of a 2 x 2 block, centred half a finer pixel on; a
    label level keeps every other pixel. So a field added to the demo plate from one of its
    own images stacks with the others on one coordinate at every level."""
    import dataclasses

    from xarray_hcs.sample import DEMO, write_sample_plate

    p = write_sample_plate(tmp_path / "plate.zarr", dataclasses.replace(
        DEMO, rows=2, columns=2, shape_zyx=(1, 64, 64)))
    dt = xr.open_datatree(p, engine="ome-hcs")
    img = dt["B/02/0/0"]["image"]
    lab = dt["B/02/0/labels/nuclei/0"]["labels"]
    xarray_hcs.add_image(p, "B", 2, img, labels={"nuclei": lab})
    dt = xr.open_datatree(p, engine="ome-hcs")
    for level in range(3):
        st = dt.hcs.stack(level)
        assert "x_origin" not in st.coords and "y_origin" not in st.coords, level
        new, old = dt[f"B/02/2/{level}"].x.values, dt[f"B/02/0/{level}"].x.values
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(dt[f"B/02/2/{level}"]["image"].values,
                                      dt[f"B/02/0/{level}"]["image"].values)
        lnew = dt[f"B/02/2/labels/nuclei/{level}"]
        lold = dt[f"B/02/0/labels/nuclei/{level}"]
        np.testing.assert_allclose(lnew.x.values, lold.x.values, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(lnew["labels"].values, lold["labels"].values)
    # level 1 of a 0.65 um grid: centres at 0.325 + 1.3 i; labels' at 1.3 i
    np.testing.assert_allclose(dt["A/01/0/1"].x.values[:2], [0.325, 1.625])
    np.testing.assert_allclose(dt["A/01/0/labels/nuclei/1"].x.values[:2], [0.0, 1.3])
