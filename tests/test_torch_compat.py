"""A torch and torchvision of different builds (torchvision's ``operator torchvision::nms does not exist``) is
caught when a command starts: one line naming both versions and the matching pair, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from gridsearch.cli.compat import matching_pair
from tests.conftest import ROOT, write_sweep

BROKEN_TORCHVISION = '''
import sys


class _Mismatched:
    """Loading torchvision fails as it does against a torch of another build."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            import torch  # noqa: F401  (torchvision's own import order)

            raise RuntimeError("operator torchvision::nms does not exist")
        return None


sys.meta_path.insert(0, _Mismatched())
'''


def test_a_mismatched_torchvision_is_one_line_with_the_matching_pair(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BROKEN_TORCHVISION)
    sweep = write_sweep(tmp_path)
    env = dict(os.environ, PYTHONPATH=f"{hook}{os.pathsep}{ROOT}")
    command = [sys.executable, "-m", "gridsearch"]
    result = subprocess.run(
        [*command, "run", str(sweep)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    torch_version, vision_version = version("torch"), version("torchvision")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: torchvision {vision_version} does not load with torch {torch_version}")
    assert "torchvision::nms does not exist" in result.stderr and matching_pair(torch_version) in result.stderr
    assert not (tmp_path / "results.db").exists()  # nothing stored
    planned = subprocess.run(
        [*command, "plan", str(sweep)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert planned.returncode == 0, planned.stderr  # plan never loads torch: it still works


def test_the_matching_pair_follows_torchs_release() -> None:
    assert matching_pair("2.13.0+cpu") == (
        "pip install torch==2.13.0 torchvision==0.28 --index-url https://download.pytorch.org/whl/cpu"
    )
    assert matching_pair("2.1.2") == "pip install torch==2.1.2 torchvision==0.16"
