"""Every ```python block of README.md and docs/*.md runs, in order, file by file.

Each file runs in a fresh directory holding a small sample plate at ``plate.zarr`` (24 wells,
2 fields, nuclei labels), in one namespace, as a reader would paste the blocks one after the
other; the ``xarray-hcs ...`` lines of its ```sh blocks run too, in the same directory (the
set-up lines, ``python -m pip ...``, are what CI itself runs). So the documentation cannot
drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xarray_hcs.sample import SamplePlate, write_sample_plate

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_PLATE = SamplePlate(rows=4, columns=6, fields=2, levels=2, shape_zyx=(1, 64, 64),
                        labels=True)


def _blocks(path: Path, lang: str = "python") -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)]


def _commands(path: Path) -> list[tuple[int, list[str]]]:
    import shlex

    out = []
    for line, block in _blocks(path, "sh"):
        for i, cmd in enumerate(block.splitlines()):
            if cmd.startswith("xarray-hcs ") and cmd.split()[1] != "demo":  # demo: test_cli
                out.append((line + i, shlex.split(cmd)[1:]))
    return out


@pytest.fixture(scope="module")
def doc_plate(tmp_path_factory) -> Path:
    return write_sample_plate(tmp_path_factory.mktemp("docplate") / "plate.zarr", DOC_PLATE)


@pytest.mark.parametrize("path", [p for p in DOCS if _blocks(p) or _commands(p)],
                         ids=lambda p: p.name)
def test_snippets_run(path, doc_plate, tmp_path, monkeypatch):
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    shutil.copytree(doc_plate, tmp_path / "plate.zarr")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for line, code in _blocks(path):
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{path.name}, the block at line {line} failed: {e!r}") from e
    from xarray_hcs.cli import main

    for line, args in _commands(path):
        assert main(args) == 0, f"{path.name}, the command at line {line} failed: {args}"


def test_every_doc_page_is_linked_from_the_index():
    index = (ROOT / "docs" / "index.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, page.name
            assert f"(docs/{page.name})" in readme, page.name
