"""Every kind of store: local path, zarr Store, zarr Group, HTTP, .ozx zip, consolidated.

Also the store-operation counts: each metadata document is read at most once, a selection
reads only what it selects, consolidated metadata means no per-node reads.
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
import zipfile
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore, WrapperStore

import xarray_hcs
from xarray_hcs.errors import HcsNotAPlateError, HcsNotFoundError, HcsReadError


class CountingStore(WrapperStore):
    """A real store that records every key read through it."""

    def __init__(self, store):
        super().__init__(store)
        self.reads: Counter[str] = Counter()

    async def get(self, key, prototype, byte_range=None):
        self.reads[key] += 1
        return await self._store.get(key, prototype, byte_range)

    @property
    def metadata_reads(self) -> Counter[str]:
        names = ("zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata")
        return Counter({k: v for k, v in self.reads.items() if k.rsplit("/", 1)[-1] in names})


def _reference(path: Path) -> xr.DataTree:
    return xarray_hcs.open_plate(path, chunks=None)


def _assert_same_plate(dt: xr.DataTree, ref: xr.DataTree) -> None:
    assert dt.hcs.field_paths == ref.hcs.field_paths
    for fp in ref.hcs.field_paths[:3]:
        for lv in ("0", "1"):
            np.testing.assert_array_equal(dt[f"{fp}/{lv}"]["image"].values,
                                          ref[f"{fp}/{lv}"]["image"].values)
            xr.testing.assert_identical(dt[f"{fp}/{lv}"].to_dataset().x,
                                        ref[f"{fp}/{lv}"].to_dataset().x)


def test_zarr_store_object(plate):
    dt = xr.open_datatree(LocalStore(plate, read_only=True), engine="ome-hcs")
    _assert_same_plate(dt, _reference(plate))


def test_zarr_group_object(plate):
    dt = xr.open_datatree(zarr.open_group(plate, mode="r"), engine="ome-hcs")
    _assert_same_plate(dt, _reference(plate))


def test_memory_store(plate):
    src = zarr.open_group(plate, mode="r")
    mem = zarr.storage.MemoryStore()
    zarr.copy_store = None  # noqa: B010 - make sure we do not rely on a copy helper
    for key in _all_keys(plate):
        mem._store_dict[key] = zarr.core.buffer.cpu.Buffer.from_bytes(
            (plate / key).read_bytes())
    del src
    dt = xarray_hcs.open_plate(mem)
    _assert_same_plate(dt, _reference(plate))


def _all_keys(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


# ------------------------------------------------------------------ HTTP on 127.0.0.1


class _QuietHandler(SimpleHTTPRequestHandler):
    """A static file server with single-range ``Range:`` support, like nginx or S3."""

    def log_message(self, *args):  # keep test output clean
        pass

    def send_head(self):
        if "/error500/" in self.path:
            self.send_error(500, "broken on purpose")
            return None
        if "/slow/" in self.path:
            time.sleep(2)
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start_s, _, end_s = rng.removeprefix("bytes=").partition("-")
        if start_s:
            start, end = int(start_s), min(int(end_s) if end_s else size - 1, size - 1)
        else:  # suffix range: the last N bytes
            start, end = max(0, size - int(end_s)), size - 1
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        n = getattr(self, "_remaining", None)
        if n is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(n))
        self._remaining = None


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    handler = functools.partial(_QuietHandler, directory=str(root))
    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # clients that time out hang up
            pass

    server = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_url(plate, http_root):
    root, url = http_root
    name = f"plate-{plate.parent.name}.zarr"
    shutil.copytree(plate, root / name, dirs_exist_ok=True)
    dt = xr.open_datatree(f"{url}/{name}", engine="ome-hcs", storage_options={})
    _assert_same_plate(dt, _reference(plate))
    dtd = xarray_hcs.open_plate(f"{url}/{name}", wells=["A2"])
    assert dtd.hcs.wells == [dtd.hcs.wells[0]] and dtd.hcs.wells[0].startswith("A/")
    assert float(dtd[dtd.hcs.field_paths[0] + "/1"]["image"].mean()) > 0


def test_http_missing_plate(http_root):
    _, url = http_root
    with pytest.raises(HcsNotAPlateError, match="holds no zarr group"):
        xr.open_datatree(f"{url}/nothing-here.zarr", engine="ome-hcs")


def test_http_server_errors_are_hcs_errors(plate, http_root):
    root, url = http_root
    with pytest.raises(HcsReadError, match="cannot be read") as e:
        xarray_hcs.open_plate(f"{url}/error500/plate.zarr")
    assert "error500/plate.zarr" in str(e.value)


def test_http_timeout_is_an_error_not_a_hang(plate, http_root):
    import aiohttp

    root, url = http_root
    (root / "slow").mkdir(exist_ok=True)
    shutil.copytree(plate, root / "slow" / plate.parent.name, dirs_exist_ok=True)
    t = time.perf_counter()
    with pytest.raises(HcsReadError, match="timed out"):
        xarray_hcs.open_plate(f"{url}/slow/{plate.parent.name}", storage_options={
            "client_kwargs": {"timeout": aiohttp.ClientTimeout(total=0.5)}})
    assert time.perf_counter() - t < 10


def test_unreadable_local_document(fresh_plate):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    p = fresh_plate("0.5")
    (p / "A" / "01" / "zarr.json").chmod(0)
    with pytest.raises(HcsReadError, match="permission denied"):
        xarray_hcs.open_plate(p)


def test_http_ozx(plate, http_root, tmp_path):
    root, url = http_root
    ozx = _zip(plate, root / f"{plate.parent.name}.ozx")
    dt = xarray_hcs.open_plate(f"{url}/{ozx.name}")
    _assert_same_plate(dt, _reference(plate))


# ------------------------------------------------------------------ .ozx


def _zip(plate: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        # metadata documents first, as the .ozx draft asks (readers can stop early)
        keys = sorted(_all_keys(plate), key=lambda k: (not k.endswith(("zarr.json", ".zattrs",
                                                                         ".zarray", ".zgroup")),
                                                        k))
        for key in keys:
            zf.write(plate / key, key)
    return out


def test_ozx_file(plate, tmp_path):
    ozx = _zip(plate, tmp_path / "plate.ozx")
    dt = xr.open_datatree(ozx, engine="ome-hcs")
    _assert_same_plate(dt, _reference(plate))
    dt.close()


def test_not_a_zip(tmp_path):
    bad = tmp_path / "plate.ozx"
    bad.write_bytes(b"not a zip")
    with pytest.raises(HcsNotAPlateError, match="not a zip"):
        xr.open_datatree(bad, engine="ome-hcs")


def test_missing_path(tmp_path):
    with pytest.raises(HcsNotFoundError, match="no such file"):
        xr.open_datatree(tmp_path / "nope.zarr", engine="ome-hcs")


# ------------------------------------------------------------------ store-operation counts


def test_each_document_read_at_most_once(plate):
    store = CountingStore(LocalStore(plate, read_only=True))
    dt = xarray_hcs.open_plate(store)
    reads = store.metadata_reads
    assert reads and max(reads.values()) == 1, reads.most_common(3)
    assert not [k for k in store.reads if k not in reads], "opening read pixel chunks"
    n_fields = len(dt.hcs.field_paths)
    per_array = 1 if "v05" in str(plate) else 2  # zarr.json, or .zarray + .zattrs
    # plate + rows + wells + fields + field levels + labels groups + label images + levels,
    # + a tables group probe per field and one for the plate
    n_arrays = n_fields * 2 * 2
    expected = (1 + 2 + 6 + n_fields + n_fields + n_fields) + n_arrays * per_array
    expected += n_fields + 1
    root_probe = 1 if "v05" in str(plate) else 4
    assert sum(reads.values()) == expected + root_probe - 1


def test_selection_reads_only_what_it_selects(plate):
    store = CountingStore(LocalStore(plate, read_only=True))
    dt = xarray_hcs.open_plate(store, wells=["B3"], fields=["1"], levels=[0], labels=False)
    (well,) = dt.hcs.wells
    read_nodes = {k.rsplit("/", 1)[0] for k in store.metadata_reads if "/" in k}
    assert read_nodes == {"B", well, f"{well}/1", f"{well}/1/0", f"{well}/1/tables", "tables"}
    store = CountingStore(LocalStore(plate, read_only=True))
    xarray_hcs.open_plate(store, wells=["B3"], fields=["1"], levels=[0], labels=False,
                          tables=False)
    read_nodes = {k.rsplit("/", 1)[0] for k in store.metadata_reads if "/" in k}
    assert read_nodes == {"B", well, f"{well}/1", f"{well}/1/0"}


def test_consolidated_metadata_means_no_per_node_reads(plate, tmp_path):
    copy = tmp_path / "plate.zarr"
    shutil.copytree(plate, copy)
    zarr.consolidate_metadata(str(copy), zarr_format=2 if "v04" in str(plate) else 3)
    store = CountingStore(LocalStore(copy, read_only=True))
    dt = xarray_hcs.open_plate(store)
    assert len(dt.hcs.field_paths) == 12
    if "v05" in str(plate):
        assert dict(store.reads) == {"zarr.json": 1}
    else:
        assert set(store.reads) <= {"zarr.json", ".zattrs", ".zgroup", ".zmetadata"}
    _assert_same_plate(dt, _reference(plate))
    with pytest.raises(HcsNotFoundError, match="no consolidated metadata"):
        xarray_hcs.open_plate(plate, consolidated=True)


@pytest.mark.parametrize("peer", ["ngio-0.4", "ngio-0.5"])  # AnnData tables; parquet tables
def test_http_tables(peer, http_root):
    """Tables over HTTP: listed at open, rows read (concurrently) when asked for."""
    from conftest import PEERS_DIR

    root, url = http_root
    shutil.copytree(PEERS_DIR / peer / "plate.zarr", root / f"{peer}.zarr",
                    dirs_exist_ok=True)
    local = xr.open_datatree(PEERS_DIR / peer / "plate.zarr", engine="ome-hcs")
    remote = xr.open_datatree(f"{url}/{peer}.zarr", engine="ome-hcs", storage_options={})
    assert remote.hcs.list_tables() == local.hcs.list_tables() == ["features"]
    pd.testing.assert_frame_equal(remote.hcs.concat_tables("features"),
                                  local.hcs.concat_tables("features"))
    pd.testing.assert_frame_equal(
        remote.hcs.table("A/01/0", "features", columns=["area"]),
        local.hcs.table("A/01/0", "features", columns=["area"]))
