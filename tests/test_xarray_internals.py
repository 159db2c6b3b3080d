"""Guards on the one module that touches xarray internals (fails loudly on an xarray upgrade)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xarray_hcs
from xarray_hcs import _xarray_internals as xi
from xarray_hcs.open import _nodes
from xarray_hcs.tree import OpenOptions


def test_this_xarray_has_the_internals_we_use():
    assert xi.fast_path_available(), "DataTree internals changed: review _xarray_internals.py"
    assert xi._default_index_mapper() is not None, (
        "xarray.backends.api._maybe_create_default_indexes is gone: review _IndexedTree")


@pytest.mark.parametrize("chunks", [None, {}])
def test_fast_and_public_builds_are_identical(plate, chunks):
    _, nodes = _nodes(plate, OpenOptions(chunks=chunks), None, None)
    fast = xi.assemble_tree(nodes, fast=True)
    public = xi.assemble_tree(nodes, fast=False)
    xr.testing.assert_identical(fast, public)
    for node in fast.subtree:  # same dims, in a form xarray itself would have built
        twin = public[node.path] if node.path != "/" else public
        assert dict(node.dims) == dict(twin.dims)
        assert set(node.xindexes) == set(twin.xindexes)


def test_intermediate_nodes_are_created():
    nodes = {"": xi.NodeSpec(attrs={"a": 1}),
             "a/b/c": xi.NodeSpec(data_vars={"v": xr.Variable(("x",), np.arange(3))})}
    fast = xi.assemble_tree(nodes, fast=True)
    xr.testing.assert_identical(fast, xi.assemble_tree(nodes, fast=False))
    assert fast["a/b/c"]["v"].values.tolist() == [0, 1, 2]


def test_open_datatree_returns_a_plain_datatree(plate):
    dt = xr.open_datatree(plate, engine="ome-hcs")
    assert type(dt) is xr.DataTree
    # operations on it behave as on any tree
    assert type(dt.map_over_datasets(lambda ds: ds)) is xr.DataTree


def test_map_over_datasets_on_a_marked_tree_takes_the_public_path(plate):
    tree = xi.mark_indexed(xarray_hcs.open_plate(plate, chunks=None))
    out = tree.map_over_datasets(lambda ds: ds.isel(x=slice(0, 2)) if "x" in ds.dims else ds)
    assert type(out) is xr.DataTree
    fp = out.hcs.field_paths[0]
    assert out[fp + "/0"].sizes["x"] == 2
