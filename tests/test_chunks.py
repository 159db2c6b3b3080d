"""The direct chunk reader gives exactly what zarr gives, or steps aside (None)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xarray_hcs._chunks import ChunkReader
from xarray_hcs.store import open_store

CODECS_V3 = [None, {"name": "zstd", "configuration": {"level": 1}},
             {"name": "gzip", "configuration": {"level": 1}},
             {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 3,
                                                 "shuffle": "shuffle", "typesize": 2}}]
CODECS_V2 = [None, {"id": "zstd", "level": 1}, {"id": "blosc", "cname": "lz4", "clevel": 5,
                                                 "shuffle": 1}, {"id": "zlib", "level": 1},
             {"id": "gzip", "level": 1}]


@st.composite
def arrays(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    dtype = draw(st.sampled_from(["uint8", "uint16", ">u2", "int32", "float32", "<f8", "bool"]))
    fmt = draw(st.sampled_from([2, 3]))
    codec = draw(st.sampled_from(CODECS_V3 if fmt == 3 else CODECS_V2))
    sep = draw(st.sampled_from(["/", "."]))
    sel = []
    for n in shape:
        if draw(st.booleans()):
            sel.append(draw(st.integers(-n, n - 1)))
        else:
            a = draw(st.integers(0, n))
            sel.append(slice(a, draw(st.integers(a, n))))
    return shape, chunks, dtype, fmt, codec, sep, tuple(sel)


def _create(path, spec) -> zarr.Array:
    """An empty zarr array as ``spec`` describes it (big-endian dtypes via the serializer)."""
    shape, chunks, dtype, fmt, codec, sep, _ = spec
    g = zarr.open_group(path, mode="w", zarr_format=fmt)
    kw = {}
    if fmt == 3:
        if dtype.startswith(">"):
            kw["serializer"] = {"name": "bytes", "configuration": {"endian": "big"}}
            dtype = dtype.replace(">", "")
        kw["compressors"] = [codec] if codec else None
        kw["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": sep}}
    else:
        kw["compressors"] = codec
        kw["chunk_key_encoding"] = {"name": "v2", "separator": sep}
    return g.create_array("a", shape=shape, chunks=chunks, dtype=dtype, fill_value=0, **kw)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays())
def test_reader_matches_zarr(tmp_path_factory, spec):
    shape, chunks, dtype, fmt, codec, sep, sel = spec
    path = tmp_path_factory.mktemp("a") / "g.zarr"
    a = _create(path, spec)
    data = (np.arange(np.prod(shape)).reshape(shape) % 251 + 1).astype(a.dtype)  # no fill chunks
    a[...] = data
    ps = open_store(path)
    from xarray_hcs.store import run_sync

    info = run_sync(ps.array_info("a"))
    reader = ChunkReader.for_array(str(path / "a"), info.doc, fmt)
    assert reader is not None, (fmt, codec)
    got = reader.read(sel)
    np.testing.assert_array_equal(got, a[sel])
    assert got.dtype == data.dtype.newbyteorder("=") or got.dtype == data.dtype


def test_reader_steps_aside(tmp_path):
    g = zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=3)
    sharded = g.create_array("s", shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="u1")
    info_doc = sharded.metadata.to_dict()
    assert ChunkReader.for_array(str(tmp_path / "g.zarr/s"), info_doc, 3) is None
    plain = g.create_array("p", shape=(4, 4), chunks=(2, 2), dtype="u1", fill_value=7)
    plain[:2, :2] = 1
    reader = ChunkReader.for_array(str(tmp_path / "g.zarr/p"), plain.metadata.to_dict(), 3)
    assert reader.read((slice(0, 2), slice(0, 2))).tolist() == [[1, 1], [1, 1]]
    assert reader.read((slice(None), slice(None))) is None  # absent chunks: zarr decides
    assert reader.read((np.array([0, 1]), slice(None))) is None  # fancy: zarr decides
    assert reader.read((slice(0, 4, 2), slice(None))) is None


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_plate_reads_use_the_reader_and_agree(fresh_plate, version):
    import xarray_hcs

    p = fresh_plate(version)
    dt = xarray_hcs.open_plate(p, chunks=None)
    root = zarr.open_group(p, mode="r")
    for fp in dt.hcs.field_paths[:3]:
        var = dt[f"{fp}/0"]["image"].variable
        backend = var._data.array
        assert backend.reader is not None
        np.testing.assert_array_equal(var.values, root[f"{fp}/0"][...])


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays(), st.booleans())
def test_writer_output_reads_in_zarr(tmp_path_factory, spec, with_fill):
    import dask.array as da

    from xarray_hcs._chunks import ChunkWriter

    shape, chunks, dtype, fmt, codec, sep, _ = spec
    path = tmp_path_factory.mktemp("w") / "g.zarr"
    a = _create(path, spec)
    data = (np.arange(np.prod(shape)).reshape(shape) % 7).astype(a.dtype)
    if with_fill:
        data[tuple(slice(0, c) for c in chunks)] = 0  # a chunk of fill values: not written
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
