"""Shared test setup: the Triton interpreter on machines without CUDA, the `cuda` marker, seeded generators, the
shared-data rule, and mutmut's copy of the sources.

TRITON_INTERPRET must be set before anything imports triton (pytest imports this file before the test modules), so
the Triton kernels run on CPU tensors here; on a CUDA machine they compile for the GPU as usual.

Under `make mutate` the tests run from mutmut's copy (mutants/tests), but the editable install's import finder maps
every `fastpose.*` module to a fixed file of the checkout: it is pointed at the copies in mutants/ (where mutmut wrote
the mutated modules) before any test imports fastpose.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# `precision: auto` on the CPU follows a per-machine probe (fastpose.device.cpu_bf16); the tests pin it to fp32 so
# that their numbers are the same on every machine (tests/test_precision.py sets it where it tests the choice).
os.environ.setdefault("FASTPOSE_CPU_BF16", "0")

# The fuzz tests (tests/test_fuzz_*.py): derandomised, so every run draws the same inputs. "fuzz" is the default for
# `make test` (the whole fuzz suite within about a minute on 2 cores); "fuzz-long" is what the slow-marked tests use.
# Module-scoped fixtures (a test image) are shared by every example on purpose.
_FUZZ = dict(derandomize=True, print_blob=True, database=None,
             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=50, deadline=2000, **_FUZZ)
settings.register_profile("fuzz-long", max_examples=300, deadline=5000, **_FUZZ)
settings.load_profile(os.environ.get("FASTPOSE_FUZZ_PROFILE", "fuzz"))

ROOT = Path(__file__).resolve().parents[1]  # the checkout, or its mutants/ copy under `make mutate`

if ROOT.name == "mutants":
    # mutmut runs the tests once in its own process, then forks one child per mutant: an OpenMP thread pool the
    # parent started (any convolution) leaves the children spinning until mutmut's CPU limit kills them, which it
    # counts as a timeout. One intra-op thread starts no pool.
    torch.set_num_threads(1)
    for finder in sys.meta_path:
        files = getattr(finder, "known_source_files", None)  # scikit-build-core's editable finder: module -> file
        if isinstance(files, dict):
            for module, path in files.items():
                if Path(path).is_relative_to(ROOT.parent) and (ROOT / Path(path).relative_to(ROOT.parent)).is_file():
                    files[module] = str(ROOT / Path(path).relative_to(ROOT.parent))

    class _KernelsLoader(importlib.machinery.SourceFileLoader):
        """mutmut names the mutants of kernels/X.py `kernels.X` and switches one on only in a module of that name,
        but the wheel installs them as fastpose.kernels.X: the copy runs with __name__ = kernels.X while it defines
        its functions (their __module__), and is imported as fastpose.kernels.X."""

        def exec_module(self, module):
            code = self.get_code(self.name)
            module.__name__ = "kernels." + self.name.rsplit(".", 1)[1]
            try:
                exec(code, module.__dict__)
            finally:
                module.__name__ = self.name

    class _KernelsFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            file = ROOT / "kernels" / f"{name.rsplit('.', 1)[-1]}.py"
            if not name.startswith("fastpose.kernels.") or not file.is_file():
                return None
            return importlib.util.spec_from_file_location(name, file, loader=_KernelsLoader(name, str(file)))

    sys.meta_path.insert(0, _KernelsFinder())

# The real small datasets, read in place (../shared/data beside the checkout). Tests that need them skip with a reason
# naming the shared data when it is absent (a user's fresh clone); on CI (`CI` set) it is required: a missing folder
# stops the run at start, and a test skipped for a missing part of it fails, so a CI run cannot pass without them.
SHARED_DATA = ROOT.parent / "shared" / "data"


def _skipped_for_shared_data(report) -> bool:
    """Whether a test report is a skip whose reason names the shared data."""
    return report.skipped and isinstance(report.longrepr, tuple) and "shared" in str(report.longrepr[2]).lower()


def pytest_configure(config):
    if os.environ.get("CI") and not SHARED_DATA.is_dir():
        raise pytest.UsageError(f"CI is set but the shared test data {SHARED_DATA} is absent: the tests that read it "
                                f"would be skipped and the run would pass without them. Provide ../shared/data beside "
                                f"the checkout (or unset CI to skip those tests locally).")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if os.environ.get("CI") and _skipped_for_shared_data(report):
        report.outcome = "failed"
        report.longrepr = f"CI is set, and this test was skipped for missing shared data: {report.longrepr[2]}"
    return report


def pytest_terminal_summary(terminalreporter):
    """One line saying how many tests skipped for want of ../shared/data (locally; on CI they fail instead)."""
    n = sum(_skipped_for_shared_data(r) for r in terminalreporter.stats.get("skipped", []))
    if n:
        terminalreporter.write_line(f"{n} tests skipped because shared test data under {SHARED_DATA} is absent "
                                    f"(with CI set they fail instead).")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped where torch sees no GPU (and run with `pytest -m cuda` where it does)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state, so random inputs are the same on every run."""
    torch.manual_seed(0)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator for tests that draw their own random inputs."""
    return torch.Generator().manual_seed(0)


# A `python -m fastpose` command that stops itself (SIGSTOP) just before its `call`-th call of `module.name`, after
# printing PAUSED: what the kill tests wait for, instead of polling files while the process races on.
_PAUSE = """
import os, runpy, signal, sys
import {module} as target
original, calls = target.{name}, 0
def paused(*args, **kwargs):
    global calls
    calls += 1
    if calls == {call}:
        print("PAUSED", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
    return original(*args, **kwargs)
target.{name} = paused
sys.argv = ["fastpose", *{args!r}]
runpy.run_module("fastpose", run_name="__main__")
"""


@pytest.fixture
def paused_command():
    """paused_command(module, name, call, args) -> the Popen of `python -m fastpose *args` (its own process group),
    stopped before the `call`-th call of module.name; the test kills it (os.killpg). Fails with the command's output
    when it ends without getting there (5 minutes at most)."""
    procs = []

    def start(module: str, name: str, call: int, args: list[str]) -> subprocess.Popen:
        code = _PAUSE.format(module=module, name=name, call=call, args=[str(a) for a in args])
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        procs.append(proc)
        watchdog = threading.Timer(300, proc.kill)
        watchdog.start()
        output = []
        for line in proc.stdout:  # blocks until the process prints; EOF when it ends
            if line.strip() == "PAUSED":
                break
            output.append(line)
        watchdog.cancel()
        assert proc.poll() is None, f"{args} ended before call {call} of {module}.{name}:\n{''.join(output)[-3000:]}"
        return proc

    yield start
    for proc in procs:  # a test that failed before killing leaves no stopped process behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
