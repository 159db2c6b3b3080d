"""The command line: ``demo``, ``info``, ``montage`` and ``heatmap`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import xarray as xr

from xarray_hcs.cli import main
from xarray_hcs.sample import well_intensity


def test_demo_writes_opens_and_analyses(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo.zarr")]) == 0
    out = capsys.readouterr().out
    assert "wells:        96" in out
    assert "fields:       192 (2 per well)" in out
    assert "channels:     DAPI, GFP" in out
    assert "mean intensity per well, channel GFP" in out
    dt = xr.open_datatree(tmp_path / "demo.zarr", engine="ome-hcs")
    assert dt.hcs.version == "0.5"
    field = dt[dt.hcs.field_paths[0]]
    assert len(dt.hcs.wells) == 96 and sorted(field.children) == ["0", "1", "2", "labels",
                                                                  "tables"]
    assert dt.hcs.list_tables() == ["nuclei"]
    # the printed table holds the per-well means: row H, column 12 is the brightest
    h_row = [line for line in out.splitlines() if line.strip().startswith("H ")][0]
    assert float(h_row.split()[-1]) >= well_intensity(7, 11, 0)
    # and the two pictures, next to the plate
    for name in ("montage.png", "heatmap.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size > 10_000


def test_montage_command(plate, tmp_path, capsys):
    out = tmp_path / "m.png"
    assert main(["montage", str(plate), str(out), "--channel", "GFP", "--agg", "mean"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["montage", str(plate), str(tmp_path / "x.png"), "--channel", "RFP"]) == 2
    assert "RFP" in capsys.readouterr().err


def test_heatmap_command(plate, tmp_path, capsys):
    import pandas as pd

    dt = xr.open_datatree(plate, engine="ome-hcs")
    for i, fp in enumerate(dt.hcs.field_paths):
        dt = dt.hcs.add_table(fp, "cells", pd.DataFrame({"area": [float(i), float(i) + 2]}))
    src = tmp_path / "with_tables.zarr"
    dt.hcs.to_zarr(src)
    out = tmp_path / "h.png"
    assert main(["heatmap", str(src), str(out), "--table", "cells", "--column", "area"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["heatmap", str(src), str(out), "--table", "nope", "--column", "area"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["heatmap", str(src), str(out), "--table", "cells", "--column", "vol"]) == 2
    assert "vol" in capsys.readouterr().err


def test_info(plate, capsys):
    assert main(["info", str(plate)]) == 0
    out = capsys.readouterr().out
    assert "wells:        6" in out and "labels:       nuclei" in out
    assert "image (c: 2, z: 1, y: 16, x: 16) uint16" in out


def test_info_on_a_bad_path_is_a_clean_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    err = capsys.readouterr().err
    assert "missing.zarr" in err and "no such file" in err
    assert "Traceback" not in err


def test_console_script_is_installed(plate):
    out = subprocess.run([sys.executable, "-m", "xarray_hcs.cli", "info", str(plate)],
                         capture_output=True, text=True, check=True)
    assert "OME-Zarr HCS plate" in out.stdout


@pytest.mark.parametrize("args", [[], ["bogus"]])
def test_usage_errors(args):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2


# ------------------------------------------------- through the installed console script


def _cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    import os
    import shutil
    from pathlib import Path

    exe = Path(sys.executable).parent / "xarray-hcs"
    exe = str(exe) if exe.exists() else shutil.which("xarray-hcs")
    assert exe, "the xarray-hcs console script is not installed"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_the_demo_leaves_nothing_behind(tmp_path):
    """`xarray-hcs demo` (the README's command) writes its plate and pictures to a temporary
    folder of its own and deletes it at the end."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = _cli("demo", cwd=tmp_path, env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr
    assert "mean intensity per well, channel GFP" in r.stdout
    assert "xarray-hcs demo DIR" in r.stdout
    assert list(tmp.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_the_demo_never_replaces_what_is_there_unless_told(tmp_path):
    mine = tmp_path / "mine"
    (mine / "plate.zarr").mkdir(parents=True)
    (mine / "plate.zarr" / "notes.txt").write_text("my own notes")
    r = _cli("demo", str(mine))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = _cli("demo", str(mine), "--overwrite")  # not a plate: still refused
    assert r.returncode == 2 and "not an OME-Zarr plate" in r.stderr
    assert (mine / "plate.zarr" / "notes.txt").read_text() == "my own notes"
    ours = tmp_path / "ours"
    assert _cli("demo", str(ours)).returncode == 0
    r = _cli("demo", str(ours))
    assert r.returncode == 2 and "exists" in r.stderr
    r = _cli("demo", str(ours), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (ours / "montage.png").exists()


def test_cli_messages_a_user_can_act_on(plate, tmp_path):
    from xarray_hcs import __version__

    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"xarray-hcs {__version__}"
    r = _cli("montage", str(plate), str(tmp_path / "missing" / "m.png"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = _cli("montage", str(plate), str(tmp_path / "m.txt"))
    assert r.returncode == 2 and ".png" in r.stderr
    r = _cli("montage", str(plate), str(tmp_path / "m.png"), "--channel", "5")
    assert r.returncode == 2 and "no channel 5" in r.stderr and "Traceback" not in r.stderr
    r = _cli("heatmap", str(plate), str(tmp_path / "h.png"), "--table", "nucleii",
             "--column", "area")
    assert r.returncode == 2 and "no field has a table 'nucleii'" in r.stderr
    fp = xr.open_datatree(plate, engine="ome-hcs").hcs.field_paths[0]
    r = _cli("info", str(plate / fp))
    assert r.returncode == 2 and f"group='{fp}'" in r.stderr, r.stderr


def test_the_cli_refuses_what_it_cannot_do_without_a_traceback(plate, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    r = _cli("demo", str(afile))
    assert r.returncode == 2 and "is a file" in r.stderr and "Traceback" not in r.stderr
    assert afile.read_text() == "mine"
    for dpi in ("0", "-5", "100000", "x"):
        r = _cli("montage", str(plate), str(tmp_path / "m.png"), "--dpi", dpi)
        assert r.returncode == 2 and "--dpi" in r.stderr and "Traceback" not in r.stderr
    group = tmp_path / "group"
    import zarr

    zarr.open_group(group / "plate.zarr", mode="w").attrs["mine"] = 1
    (group / "plate.zarr" / "notes.txt").write_text("mine")
    r = _cli("demo", str(group), "--overwrite")  # a zarr group, but no plate
    assert r.returncode == 2 and "not an OME-Zarr plate" in r.stderr
    assert (group / "plate.zarr" / "notes.txt").read_text() == "mine"
