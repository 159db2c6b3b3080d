"""A role in the many-writers race (tests/test_ondisk.py): adder, remover or reader.

    python tests/_race.py ROLE ID ROOT RUNS

Every process takes part in ``RUNS`` races, one plate each (``ROOT/run-<r>/plate.zarr``,
made by the test). A race starts when every process has said it is ready (a file each in
``ROOT/run-<r>/``: waiting on those files is waiting on an event, not on time), so that all
writers hit the plate at once. Each image's pixels are one value that names it.

- adder ``i``: adds two images to the shared wells, values ``100000 * (r + 1) + 1000 * i + k``;
- remover ``j``: removes the fields listed in ``ROOT/run-<r>/remove-<j>.json``;
- reader: opens the plate and reads every listed field again and again until the writers are
  done; each read must give the field's own value (never the fill value of chunks deleted
  under it), or an HcsError (a listing that changed under it); anything else is reported.

Each process prints one JSON line per race: what it added or removed, or what it saw.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

import xarray_hcs

WRITERS = 10  # 8 adders and 2 removers
PROCESSES = 12  # and 2 readers
WELLS = ("A/1", "A/2", "B/1")


def _image(value: int) -> xr.DataArray:
    return xr.DataArray(np.full((1, 1, 8, 8), value, "uint32"), dims=("c", "z", "y", "x"),
                        coords={"c": ["DAPI"]})


def _wait(folder: Path, prefix: str, n: int, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while len(list(folder.glob(f"{prefix}*"))) < n:
        if time.monotonic() > end:
            raise TimeoutError(f"{n} {prefix} files never appeared in {folder}")
        time.sleep(0.002)


def _read(plate: Path, values: dict[str, int], removing: set[str]) -> list[str]:
    """One look at the plate: the problems seen (an HcsError is not one)."""
    problems = []
    try:
        dt = xr.open_datatree(plate, engine="ome-hcs")
        for fp in dt.hcs.field_paths:
            got = int(dt[f"{fp}/0"]["image"].values.flat[0])
            # its own value, or an image added in the race (at a new path, or at the path
            # of a field removed before: paths are reused); never the fill value of chunks
            # deleted under the reader (that is an HcsNotFoundError)
            ok = got == values.get(fp) or (
                got >= 100000 and (fp not in values or fp in removing))
            if not ok:
                problems.append(f"{fp} read {got}, expected {values.get(fp)}")
    except xarray_hcs.HcsError:
        pass  # a listing that changed under the reader: it reads again
    except Exception as e:  # noqa: BLE001  anything else is a problem
        problems.append(f"{type(e).__name__}: {e}")
    return problems


def main(role: str, ident: int, root: Path, runs: int) -> None:
    for r in range(runs):
        run = root / f"run-{r}"
        plate = run / "plate.zarr"
        (run / f"ready-{role}-{ident}").touch()
        _wait(run, "ready-", PROCESSES)
        report: dict[str, object] = {"run": r, "role": role, "id": ident}
        if role == "adder":
            added = {}
            for k in range(2):
                value = 100000 * (r + 1) + 1000 * ident + k
                row, col = WELLS[(ident + k) % len(WELLS)].split("/")
                added[xarray_hcs.add_image(plate, row, col, _image(value), levels=1)] = value
            report["added"] = added
        elif role == "remover":
            fields = json.loads((run / f"remove-{ident}.json").read_text())
            report["removed"] = [xarray_hcs.remove_image(plate, *f.split("/")) for f in fields]
        else:
            values = json.loads((run / "values.json").read_text())
            removing = {f for j in range(2)
                        for f in json.loads((run / f"remove-{j}.json").read_text())}
            problems, looks = [], 0
            while len(list(run.glob("done-*"))) < WRITERS:
                problems += _read(plate, values, removing)
                looks += 1
            report.update(problems=problems, looks=looks)
        if role != "reader":
            (run / f"done-{role}-{ident}").touch()
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
