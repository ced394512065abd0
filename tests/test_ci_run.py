"""`.ci/run` fails the run on anything that leaves a check undone (issue 21, item 8).

The script runs for real, in a copy of the repository's `.ci/` folder, with a PATH holding only
stand-ins: `make` records the environment it was given and exits with a chosen status, `apt-get`
fails or "installs" a `chromium`. Nothing is installed and no test suite runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def _ci_run(tmp_path: Path, *, make_status: int = 0, chromium: bool = True, apt_installs: bool = False):
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    (repo / ".ci").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    _stand_in(bin_dir, "make", f'printf "%s" "${{CI-unset}}" > "{tmp_path}/ci-seen"; exit {make_status}')
    if chromium:
        _stand_in(bin_dir, "chromium", "exit 0")
    install = f'printf "#!/bin/bash\\n" > "{bin_dir}/chromium"; chmod 755 "{bin_dir}/chromium"' if apt_installs else "exit 100"
    _stand_in(bin_dir, "apt-get", f'[ "$1" = update ] && exit 0; {install}')
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    done = subprocess.run(["/bin/bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True,
                          timeout=60)
    seen = (tmp_path / "ci-seen").read_text() if (tmp_path / "ci-seen").exists() else None
    return done, seen


def test_green_suite_passes_and_ci_is_set_for_the_tests(tmp_path):
    done, seen = _ci_run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert seen == "true"  # tests/skips.py's in_ci(): a skipped check fails in CI


@pytest.mark.parametrize("status", [1, 2])
def test_a_failing_suite_fails_the_run(tmp_path, status):
    assert _ci_run(tmp_path, make_status=status)[0].returncode == status


def test_no_tests_ran_is_a_failure(tmp_path):
    done, _ = _ci_run(tmp_path, make_status=5)
    assert done.returncode == 5
    assert "pytest collected no test (exit 5)" in done.stderr


def test_missing_chromium_that_cannot_be_installed_fails_before_the_tests(tmp_path):
    done, seen = _ci_run(tmp_path, chromium=False)
    assert done.returncode == 1
    assert seen is None, "the tests ran without the browser the UI check needs"
    assert done.stderr.strip().splitlines() == [
        "error: chromium is not installed and could not be installed (apt-get install -y chromium); "
        "the Prefect UI check (tests/test_e2e_deployment.py) cannot run"]


def test_chromium_installed_by_apt_lets_the_tests_run(tmp_path):
    done, seen = _ci_run(tmp_path, chromium=False, apt_installs=True)
    assert done.returncode == 0, done.stderr
    assert seen == "true"
