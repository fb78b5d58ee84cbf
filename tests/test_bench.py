"""Every benchmark keeps running: each one's quick mode (the bundled sample, a few steps) must
finish, print its comparison table and leave the project folder as it found it."""

import math
import os
import re
import sys

import pytest

from tests.helpers import ROOT, assert_one_line_error, run_script

# script and arguments -> a fragment of the table's header that the run must print
QUICK_RUNS = {
    ("bench/deconv_speed.py", "--quick"): "ms/projection",
    ("bench/occlusion_speed.py", "--quick"): "| method | forward evaluations |",
    ("bench/predict_speed.py", "--quick"): "of ceiling",
    ("bench/time_to_accuracy.py", "--quick"): "epochs to",
    ("bench/train_speed.py", "--quick"): "img/s",
    ("bench/make_photo_set.py", "--quick"): "photos,",
    ("bench/filter_smoothness.py", "--quick"): "| run | recipe | epochs | minutes | val accuracy | smooth < 1/4 |",
    ("bench/optimize_speed.py", "--quick"): "| method | layer | maps | seconds | s/map |",
    ("bench/sanity_speed.py", "--quick"): "| similarities | sanity.measure seconds | speed-up |",
    ("bench/cache_speed.py", "--quick"): "| cache | KB/photo | build s |",
    ("bench/cache_memory.py", "--quick"): "| photos | classes | JPEG cache MB |",
}
NUMBER = r"([-+]?[\d.]+(?:e[-+]?\d+)?)"


def positive(*values):
    return all(0 < value < math.inf for value in values)


# script -> (a row of its table, with the numbers in it captured; what those numbers must be)
SANE = {
    # as many projections as captum's, at a positive speed, equal to captum's within float error
    "bench/deconv_speed.py": (
        rf"zfnet\.deconv\.project +(\d+) +{NUMBER} +{NUMBER} +{NUMBER}x +{NUMBER}",
        lambda count, seconds, per, speedup, difference: (
            count == 6 and positive(seconds, per, speedup) and difference < 1e-4
        ),
    ),
    "bench/occlusion_speed.py": (
        rf"\| ours \(windowed, batched\) \| (\d+) \| {NUMBER} \| {NUMBER}x \| {NUMBER} \|",
        lambda evaluations, seconds, speedup, difference: (
            evaluations == 16 and positive(seconds, speedup) and difference < 1e-4
        ),
    ),
    "bench/predict_speed.py": (
        rf"predict\.py classify\(\) over the folder +{NUMBER} +(\d+)%",
        lambda speed, share: positive(speed, share),
    ),
    "bench/time_to_accuracy.py": (
        rf"train\.py defaults +.*? +{NUMBER} \(ep (\d+)\) +{NUMBER} s +{NUMBER}%",
        lambda accuracy, epoch, seconds, smooth: 0 <= accuracy <= 1 and epoch == 1 and positive(seconds, smooth),
    ),
    "bench/train_speed.py": (
        rf"train\.py pipeline +float32 +channels_last +{NUMBER} +{NUMBER} +(\d+)%",
        lambda speed, times_tutorial, share: positive(speed, times_tutorial, share),
    ),
    "bench/make_photo_set.py": (rf"(\d+) photos, {NUMBER} MiB", lambda photos, mib: positive(photos, mib)),
    "bench/explore_speed.py": (rf"\| the whole folder \| (\d+) \| {NUMBER} \|", lambda files, mb: positive(files, mb)),
    # two maps a layer, in positive time, both methods' pictures measured
    "bench/optimize_speed.py": (
        rf"\| ours \(zfnet\.optimize\) \| 5 \| (\d+) \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER}% \|",
        lambda maps, seconds, per_map, ratio, smooth: maps == 2 and positive(seconds, per_map, ratio) and smooth <= 100,
    ),
    # the same SSIM and Spearman scores as the textbook forms', to float64 rounding
    "bench/sanity_speed.py": (
        rf"\| separable SSIM in one batch, NumPy ranks \(ours\) \| {NUMBER} \| {NUMBER}x \| {NUMBER} / {NUMBER} \|",
        lambda seconds, speedup, ssim, spearman: positive(seconds, speedup) and ssim < 1e-9 and spearman < 1e-9,
    ),
    # the JPEG cache a fraction of the raw one's 196.6 KB a photo (the header aside), training from both
    "bench/cache_speed.py": (
        rf"\| jpeg \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|",
        lambda kilobytes, seconds, rate, speed, peak: 1 < kilobytes < 60 and positive(seconds, rate, speed, peak),
    ),
    "bench/cache_memory.py": (
        rf"peak RSS of 240 photos / 60 photos: {NUMBER}",
        lambda ratio: 0.5 < ratio < 2,
    ),
    # white noise's smoothness is known: 17.9% of a 7x7 filter's energy lies below 1/4 cycle/px
    "bench/filter_smoothness.py": (
        rf"\| white noise, 7x7 \| - \| - \| - \| - \| {NUMBER}% \| {NUMBER}% \| {NUMBER}% \|",
        lambda below_quarter, below_eighth, oriented: (
            abs(below_quarter - 17.9) < 0.5 and below_eighth < below_quarter and oriented == 0
        ),
    ),
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
    row, sane = SANE[command[0]]
    found = re.search(row, result.stdout)
    assert found, f"no row like {row!r} in:\n{result.stdout[-3000:]}"
    numbers = [float(value) for value in found.groups()]
    assert sane(*numbers), f"implausible numbers {numbers} in: {found.group(0)}"
    assert project_listing() == before


def test_time_to_accuracy_trains_a_variant_beside_the_defaults_at_each_seed():
    before = project_listing()
    flags = ("--quick", "--seeds", "0,1", "--variant", "layer1_init_scale=1", "layer1_lr_scale=1")
    result = run_script("bench/time_to_accuracy.py", *flags, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    usual = "train.py --set layer1_init_scale=1.0 layer1_lr_scale=1.0"
    smooth = {}
    for kind in ("train.py defaults", usual):
        for seed in (0, 1):
            found = re.search(rf"^{re.escape(kind)}, seed {seed} .* {NUMBER}%$", result.stdout, re.MULTILINE)
            assert found, result.stdout[-3000:]
            smooth[kind, seed] = float(found[1])
        mean = re.search(rf"^{re.escape(kind)}, mean of seeds 0,1: .*smoothness {NUMBER}%", result.stdout, re.MULTILINE)
        assert mean and float(mean[1]) == pytest.approx((smooth[kind, 0] + smooth[kind, 1]) / 2, abs=0.06)
    # One epoch of the sample: the default's small layer-1 start already stands out of the
    # usual start's noise.
    assert min(smooth["train.py defaults", seed] for seed in (0, 1)) > max(smooth[usual, seed] for seed in (0, 1))
    assert "train.py defaults, seed 0 " in result.stdout and "fp32" not in result.stdout
    assert project_listing() == before


def test_time_to_accuracy_lets_the_tutorial_train_on_for_its_time_to_the_target_but_compares_its_epochs():
    # A target above 100% is never reached: the tutorial loop trains all its 3 epochs.
    result = run_script("bench/time_to_accuracy.py", "--quick", "--tutorial-epochs", "3", "--target", "1.01")
    assert result.returncode == 0, result.stderr[-3000:]
    first = re.search(rf"^  tutorial epoch 1: val acc {NUMBER} at (\d+) s$", result.stdout, re.MULTILINE)
    assert first and "  tutorial epoch 3: " in result.stdout and "tutorial epoch 4" not in result.stdout
    row = re.search(rf"^tutorial recipe .* not reached +- +{NUMBER} \(ep 1\) +(\d+) s", result.stdout, re.MULTILINE)
    assert row and row[2] == first[2], result.stdout[-3000:]  # best and total of --epochs' 1 epoch
    assert "the tutorial recipe did not reach 101% in 3 epochs" in result.stdout
    assert "  train.py defaults: not reached" in result.stdout


def test_time_to_accuracy_refuses_a_tutorial_shorter_than_the_others_in_one_line():
    result = run_script("bench/time_to_accuracy.py", "--epochs", "5", "--tutorial-epochs", "3")
    assert_one_line_error(result, "--tutorial-epochs must be at least --epochs (5), got 3")


@pytest.mark.parametrize("seeds", [",", "1,1"])
def test_time_to_accuracy_refuses_seeds_it_cannot_compare_in_one_line(seeds):
    assert_one_line_error(run_script("bench/time_to_accuracy.py", "--seeds", seeds), "--seeds needs one or more")


def test_explore_speed_keeps_the_site_it_built_where_asked(tmp_path):
    before = project_listing()
    site = tmp_path / "site"
    result = run_script("bench/explore_speed.py", "--quick", "--keep", site, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| build | seconds | goal |" in result.stdout
    row, sane = SANE["bench/explore_speed.py"]
    files, megabytes = (float(value) for value in re.search(row, result.stdout).groups())
    assert sane(files, megabytes)
    kept = [path for path in site.rglob("*") if path.is_file()]
    assert (site / "index.html").is_file() and len(kept) == files
    kept_line = result.stdout.strip().splitlines()[-1]
    assert kept_line.startswith("the site, kept: ") and kept_line.endswith(os.path.join("site", "index.html"))
    assert project_listing() == before


def test_explore_speed_refuses_to_build_into_a_folder_that_exists(tmp_path):
    # A run under runs/ where it starts: --quick makes its own network, so no line names that run.
    (tmp_path / "runs" / "real").mkdir(parents=True)
    (tmp_path / "runs" / "real" / "best.pth").write_bytes(b"")
    existing = tmp_path / "site"
    existing.mkdir()
    result = run_script("bench/explore_speed.py", "--quick", "--keep", existing, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"explore_speed.py: error: --keep {existing}: it exists, and a cold build needs a new folder; name another\n"
    )
    assert os.listdir(existing) == []


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
    assert "img/s" in result.stdout and "| cache | KB/photo | build s |" in result.stdout


def test_an_imagenet_shaped_set_has_synset_folders_and_imagenet_sizes(tmp_path):
    from PIL import Image

    out = tmp_path / "set"
    result = run_script(
        "bench/make_photo_set.py", "--out", out, "--photos", "40", "--classes", "8", "--shape", "imagenet"
    )
    assert result.returncode == 0 and "40 photos" in result.stdout and "8 classes" in result.stdout
    names = [f"n{index:08d}" for index in range(8)]
    assert sorted(os.listdir(out / "train")) == names and sorted(os.listdir(out / "val")) == names
    long_sides = set()
    for path in (out / "train").rglob("*.jpg"):
        with Image.open(path) as image:
            long_sides.add(max(image.size))
    assert 500 in long_sides and long_sides <= {375, 500, 1024}
