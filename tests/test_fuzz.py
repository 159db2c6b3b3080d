"""The fuzzer (tests/_fuzz.py): hostile plates give the right values or an HcsError, never
another exception, a wrong value, a hang or unbounded memory.

Cases run in a worker process with an address-space limit, one case at a time, each within a
time limit (a case that runs over is a hang: the worker is killed and a new one started).
A few hundred cases by default (in CI, split in parts that run in parallel);
``pytest tests/test_fuzz.py --long`` runs 10,000; ``XARRAY_HCS_FUZZ_CASES=N`` any number.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import _fuzz

HERE = Path(__file__).parent
PARTS = 3


def _cases(config: pytest.Config) -> int:
    if os.environ.get("XARRAY_HCS_FUZZ_CASES"):
        return int(os.environ["XARRAY_HCS_FUZZ_CASES"])
    return 10_000 if config.getoption("--long") else 300


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzzbase")
    return {v: _fuzz.base_plate(root, v) for v in ("0.4", "0.5")}


class Worker:
    """A worker process (tests/_fuzz.py worker) and a reader of its answers."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_fuzz.py"), "worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=HERE)
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert json.loads(self.answers.get(timeout=120)) == {"ready": True}

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.answers.put(line)
        self.answers.put("")  # the worker died (memory limit, a crash)

    def run(self, plate: Path, base: Path) -> dict[str, str] | None:
        """The worker's answer, or None if it died or ran over the time limit."""
        self.proc.stdin.write(json.dumps({"plate": str(plate), "base": str(base)}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.answers.get(timeout=_fuzz.TIME_LIMIT)
        except queue.Empty:
            line = None
        if not line:
            self.proc.kill()
            self.proc.wait()
            return None
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


@pytest.mark.parametrize("part", range(PARTS))
def test_hostile_plates_give_right_values_or_hcs_errors(bases, tmp_path, part, request):
    n = _cases(request.config)
    seeds = range(part, n, PARTS)
    worker = Worker()
    findings, outcomes = [], {}
    try:
        for seed in seeds:
            plate, what, version = _fuzz.make_case(bases, tmp_path, seed)
            answer = worker.run(plate, bases[version])
            if answer is None:
                findings.append(f"case {seed} ({version}; {what}): hang, or memory past "
                                f"{_fuzz.MEMORY_LIMIT >> 20} MiB (the worker died)")
                worker = Worker()
            elif "finding" in answer:
                findings.append(f"case {seed} ({version}; {what}): {answer['finding']}")
            else:
                kind = answer["outcome"].split(":")[0]
                outcomes[kind] = outcomes.get(kind, 0) + 1
            _fuzz.cleanup(plate)
    finally:
        worker.close()
    print(f"{len(seeds)} cases: {outcomes}")
    assert not findings, f"{len(findings)} of {len(seeds)} cases:\n" + "\n\n".join(findings)
