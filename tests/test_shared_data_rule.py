"""tests/conftest.py's shared-data rule, on a throwaway checkout beside which ../shared/data is absent: locally the
tests that need it skip with one summary line; with CI set a missing folder stops the run, a missing part fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

NEEDS_DATA = textwrap.dedent('''
    from pathlib import Path

    import pytest

    COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco"


    @pytest.mark.skipif(not COCO.is_dir(), reason=f"shared test data not found at {COCO}")
    def test_reads_coco():
        assert COCO.is_dir()


    def test_without_data():
        assert 1 + 1 == 2
''')


def _run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    repo = tmp_path / "main"
    (repo / "tests").mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), repo / "tests" / "conftest.py")
    (repo / "tests" / "test_needs_data.py").write_text(NEEDS_DATA)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_missing_shared_data_skips_locally_and_fails_on_ci(tmp_path):
    shared = tmp_path / "shared" / "data"
    local = _run(tmp_path, ci=False)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "1 passed, 1 skipped" in local.stdout
    assert f"1 tests skipped because shared test data under {shared} is absent" in local.stdout

    ci = _run(tmp_path, ci=True)
    assert ci.returncode == pytest.ExitCode.USAGE_ERROR, ci.stdout + ci.stderr
    assert f"CI is set but the shared test data {shared} is absent" in ci.stderr
    assert "passed" not in ci.stdout

    shared.mkdir(parents=True)  # the folder exists, the test's part of it (coco/) does not
    partial = _run(tmp_path, ci=True)
    assert partial.returncode == pytest.ExitCode.TESTS_FAILED, partial.stdout + partial.stderr
    assert "CI is set, and this test was skipped for missing shared data" in partial.stdout
    assert "1 passed" in partial.stdout and "skipped" not in partial.stdout.splitlines()[-1]
