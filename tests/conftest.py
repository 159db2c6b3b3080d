"""Shared fixtures: tiny real plates on disk, built once per test session."""

from __future__ import annotations

import atexit
import dataclasses
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

# ome-zarr-models first: once ngio has been imported, ome-zarr-models' HCS validation of the
# same plate fails with pydantic class-identity errors (both build on pydantic-zarr); the
# order of imports decides it, so fix the order for the whole session
try:  # noqa: SIM105 - an optional test dependency
    import ome_zarr_models.v04.hcs  # noqa: F401
    import ome_zarr_models.v05.hcs  # noqa: F401
    from ome_zarr_models import open_ome_zarr  # noqa: F401
except ImportError:
    pass

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from xarray_hcs.sample import SamplePlate, write_sample_plate

# no example database in the working tree, and hypothesis' caches in a temporary folder
# deleted at exit: a test run leaves nothing behind (the examples are derandomized, or
# seeded by XARRAY_HCS_RANDOM, so a failure reproduces without a database)
settings.register_profile("xarray_hcs", database=None)
settings.load_profile("xarray_hcs")
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="xarray-hcs-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)

#: the official OME-NGFF schemas, examples and test suites, vendored (see SOURCES.md there)
SPEC_DIR = Path(__file__).parent / "data" / "ngff-spec"

PEERS_DIR = Path(__file__).parent / "data" / "peers"

TINY = SamplePlate(rows=2, columns=3, fields=2, channels=("DAPI", "GFP"), levels=2,
                   shape_zyx=(1, 16, 16), labels=True)


def load_spec_json(path: Path) -> dict:
    """Spec example files may carry // comments (0.6rc0)."""
    text = re.sub(r"(?m)^\s*//.*$|(?<=[,\[{\s])//[^\n]*", "", path.read_text())
    return json.loads(text)


@pytest.fixture(scope="session")
def plate_v05(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_plate(tmp_path_factory.mktemp("v05") / "plate.zarr", TINY)


@pytest.fixture(scope="session")
def plate_v04(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = dataclasses.replace(TINY, version="0.4", column_width=0)
    return write_sample_plate(tmp_path_factory.mktemp("v04") / "plate.zarr", layout)


@pytest.fixture(params=["0.4", "0.5"])
def plate(request: pytest.FixtureRequest, plate_v04: Path, plate_v05: Path) -> Path:
    return plate_v04 if request.param == "0.4" else plate_v05


@pytest.fixture
def fresh_plate(tmp_path: Path):
    """A factory for a new small plate the test may modify (version → path)."""

    def make(version: str = "0.5", **kw) -> Path:
        kw.setdefault("column_width", 2 if version == "0.5" else 0)  # as plate_v04/plate_v05
        layout = dataclasses.replace(TINY, version=version, **kw)
        n = len(list(tmp_path.glob("plate-*.zarr")))
        return write_sample_plate(tmp_path / f"plate-{version}-{n}.zarr", layout)

    return make


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true",
                     help="long runs of the randomised tests (the fuzzer: 10,000 cases)")
