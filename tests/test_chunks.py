"""Our chunk reader gives exactly what zarr gives (every selection, codec, sharding, absent
chunks), locally in the calling thread and through the store; or steps aside (None) for the
codecs only zarr applies. The writer's chunks read in zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xarray_hcs.store import open_store, run_sync

CODECS_V3 = [None, {"name": "zstd", "configuration": {"level": 1}},
             {"name": "gzip", "configuration": {"level": 1}},
             {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 3,
                                                 "shuffle": "shuffle", "typesize": 2}},
             [{"name": "zstd", "configuration": {"level": 1}}, {"name": "crc32c"}]]
CODECS_V2 = [None, {"id": "zstd", "level": 1}, {"id": "blosc", "cname": "lz4", "clevel": 5,
                                                 "shuffle": 1}, {"id": "zlib", "level": 1},
             {"id": "gzip", "level": 1}, {"id": "lz4"}, {"id": "bz2", "level": 1},
             {"id": "lzma"}]


@st.composite
def arrays(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    dtype = draw(st.sampled_from(["uint8", "uint16", ">u2", "int32", "float32", "<f8", "bool"]))
    fmt = draw(st.sampled_from([2, 3]))
    codec = draw(st.sampled_from(CODECS_V3 if fmt == 3 else CODECS_V2))
    sep = draw(st.sampled_from(["/", "."]))
    shards = None
    if fmt == 3 and draw(st.booleans()):  # shards of 1-2 chunks per axis
        shards = tuple(c * draw(st.integers(1, 2)) for c in chunks)
    order = draw(st.sampled_from(["C", "F"])) if fmt == 2 else "C"
    sel = []
    for n in shape:
        kind = draw(st.integers(0, 3))
        if kind == 0:
            sel.append(draw(st.integers(-n, n - 1)))
        elif kind == 1:
            a = draw(st.integers(0, n))
            sel.append(slice(a, draw(st.integers(a, n))))
        elif kind == 2:
            sel.append(slice(draw(st.integers(0, n - 1)), None, draw(st.integers(1, 3))))
        else:
            sel.append(np.array(draw(st.lists(st.integers(0, n - 1), min_size=1,
                                              max_size=4))))
    absent = draw(st.booleans())  # leave some chunks unwritten: they read as the fill value
    return shape, chunks, dtype, fmt, codec, sep, tuple(sel), shards, order, absent


def _create(path, spec) -> zarr.Array:
    """An empty zarr array as ``spec`` describes it (big-endian dtypes via the serializer)."""
    shape, chunks, dtype, fmt, codec, sep, _, shards, order, _ = spec
    g = zarr.open_group(path, mode="w", zarr_format=fmt)
    kw = {}
    if fmt == 3:
        if dtype.startswith(">"):
            kw["serializer"] = {"name": "bytes", "configuration": {"endian": "big"}}
            dtype = dtype.replace(">", "")
        kw["compressors"] = (codec if isinstance(codec, list) else [codec]) if codec else None
        kw["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": sep}}
        if shards is not None:
            kw["shards"] = shards
    else:
        kw["compressors"] = codec
        kw["chunk_key_encoding"] = {"name": "v2", "separator": sep}
        kw["order"] = order
    return g.create_array("a", shape=shape, chunks=chunks, dtype=dtype, fill_value=3, **kw)


def _outer(a: zarr.Array, sel: tuple) -> np.ndarray:
    return np.asarray(a.oindex[sel])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays())
def test_reader_matches_zarr(tmp_path_factory, spec):
    shape, chunks, dtype, fmt, codec, sep, sel, shards, order, absent = spec
    path = tmp_path_factory.mktemp("a") / "g.zarr"
    a = _create(path, spec)
    data = (np.arange(np.prod(shape)).reshape(shape) % 251 + 5).astype(a.dtype)
    if absent:
        a[tuple(slice(0, c) for c in chunks)] = data[tuple(slice(0, c) for c in chunks)]
    else:
        a[...] = data
    ps = open_store(path)
    info = run_sync(ps.array_info("a"))
    from xarray_hcs.arrays import ZarrLevelArray

    backend = ZarrLevelArray(ps, info)
    assert backend.reader is not None, (fmt, codec, shards)
    want = _outer(zarr.open_array(path / "a", mode="r"), sel)
    got = backend.read_inline(sel)  # local: in this thread
    np.testing.assert_array_equal(got, want)
    assert got.dtype == info.dtype and got.dtype.isnative
    np.testing.assert_array_equal(run_sync(backend.reader.aread(sel)), want)  # through the store


def test_reader_steps_aside_for_codecs_only_zarr_applies(tmp_path):
    g = zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=3)
    t = g.create_array("t", shape=(4, 6), chunks=(2, 3), dtype="u2", fill_value=0,
                       filters=[{"name": "transpose", "configuration": {"order": [1, 0]}}])
    t[...] = np.arange(24).reshape(4, 6)
    ps = open_store(tmp_path / "g.zarr")
    info = run_sync(ps.array_info("t"))
    assert info.format is None
    from xarray_hcs.arrays import ZarrLevelArray

    backend = ZarrLevelArray(ps, info)
    np.testing.assert_array_equal(backend._getitem((slice(None), slice(1, 5))),
                                  np.arange(24).reshape(4, 6)[:, 1:5])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_plate_reads_use_the_reader_and_agree(fresh_plate, version):
    import xarray_hcs

    p = fresh_plate(version)
    dt = xarray_hcs.open_plate(p, chunks=None)
    root = zarr.open_group(p, mode="r")
    for fp in dt.hcs.field_paths[:3]:
        var = dt[f"{fp}/0"]["image"].variable
        backend = var._data.array
        assert backend.reader is not None and backend.reader.local is not None
        np.testing.assert_array_equal(var.values, root[f"{fp}/0"][...])


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays(), st.booleans())
def test_writer_output_reads_in_zarr(tmp_path_factory, spec, with_fill):
    import dask.array as da

    from xarray_hcs._chunks import ChunkWriter

    shape, chunks, dtype, fmt, codec, sep, _, shards, order, _ = spec
    if shards is not None:
        return  # the writer writes unsharded arrays (ours)
    path = tmp_path_factory.mktemp("w") / "g.zarr"
    a = _create(path, spec)
    data = (np.arange(np.prod(shape)).reshape(shape) % 7).astype(a.dtype)
    if with_fill:
        data[tuple(slice(0, c) for c in chunks)] = 3  # a chunk of fill values: not written
    writer = ChunkWriter.for_array(str(path / "a"), a.metadata.to_dict(), fmt)
    assert writer is not None
    da.store(da.from_array(data, chunks=chunks), writer, lock=False)
    np.testing.assert_array_equal(zarr.open_array(path / "a", mode="r")[...], data)
    assert not list((path / "a").rglob("*.partial"))


def test_writer_refuses_unaligned_blocks(tmp_path):
    from xarray_hcs._chunks import ChunkWriter

    g = zarr.open_group(tmp_path / "g.zarr", mode="w")
    a = g.create_array("a", shape=(8, 8), chunks=(4, 4), dtype="u1", fill_value=0)
    writer = ChunkWriter.for_array(str(tmp_path / "g.zarr/a"), a.metadata.to_dict(), 3)
    with pytest.raises(ValueError, match="not aligned"):
        writer[(slice(2, 6), slice(0, 4))] = np.ones((4, 4), "u1")
