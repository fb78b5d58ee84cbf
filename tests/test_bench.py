"""Every benchmark keeps running: each one's quick mode (the bundled sample, a few steps) must
finish, print its comparison table and leave the project folder as it found it."""

import os
import sys

import pytest

from tests.helpers import ROOT, run_script

# script and arguments -> a fragment of the table's header that the run must print
QUICK_RUNS = {
    ("bench/deconv_speed.py", "--quick"): "ms/projection",
    ("bench/occlusion_speed.py", "--quick"): "| method | forward evaluations |",
    ("bench/predict_speed.py", "--quick"): "of ceiling",
    ("bench/time_to_accuracy.py", "--quick"): "epochs to",
    ("bench/train_speed.py", "--quick"): "img/s",
    ("bench/make_photo_set.py", "--quick"): "photos,",
    ("bench/explore_speed.py", "--quick"): "| build | seconds | goal |",
    ("bench/filter_smoothness.py", "--quick"): "| run | recipe | epochs | minutes | val accuracy | smooth < 1/4 |",
}


def project_listing():
    return sorted(os.listdir(ROOT))


@pytest.mark.parametrize("command", list(QUICK_RUNS), ids=lambda command: " ".join(command))
def test_quick_mode_prints_its_table(command):
    before = project_listing()
    result = run_script(*command, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert QUICK_RUNS[command] in result.stdout, result.stdout[-3000:]
    assert project_listing() == before


def test_gpu_script_dry_runs_on_the_cpu(tmp_path):
    import subprocess

    env = {
        **os.environ,
        "PHOTOS": "20",
        "STEPS": "1",
        "BATCH": "2",
        "WORKERS": "0",
        "DEVICE": "cpu",
        "PYTHON": sys.executable,
    }
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "bench", "gpu.sh")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "img/s" in result.stdout
