import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, run_script
from zfnet.data import scan_split
from zfnet.splitting import SAMPLE_DIR, split_class, split_sample


def test_split_sample_splits_the_bundled_sample_as_split_data_does_by_default(tmp_path):
    dest = split_sample(tmp_path / "data")
    classes, samples = scan_split(dest)
    assert classes == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert (len(samples["train"]), len(samples["val"])) == (55, 5)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert (manifest["dataset"], manifest["source"], manifest["seed"], manifest["val_ratio"]) == (
        "bundled sample",
        str(SAMPLE_DIR),
        0,
        0.1,
    )
    assert manifest["skipped"] == [{"file": "LICENSE.txt", "reason": "not an image"}]


def test_split_class_keeps_identical_photos_together_and_one_photo_in_train():
    names = [f"{i}.jpg" for i in range(10)]
    sha256s = {f"c/{name}": name for name in names} | {"c/0.jpg": "twin", "c/9.jpg": "twin"}
    for seed in range(5):
        train, val = split_class("c", names, sha256s, 0.3, seed)
        assert sorted(train + val) == names and train == sorted(train) and val == sorted(val)
        assert ("0.jpg" in val) == ("9.jpg" in val)
        assert len(val) in (3, 4)  # 3 photos, or a unit of two that crosses the target
    assert split_class("c", ["only.jpg"], {"c/only.jpg": "x"}, 0.5, 0) == (["only.jpg"], [])


# split_data.py, killed (os._exit, as kill -9: nothing is cleaned up) at one step of the swap.
KILLED_AT = """
import os, runpy, sys
from zfnet import splitting

step, steps, real = int(sys.argv.pop(1)), [0], {name: getattr(os, name) for name in ("rename", "replace", "unlink")}
swap_in = splitting.swap_in


def counted(name):
    def call(*args, **kwargs):
        steps[0] += 1
        if steps[0] == step:
            os._exit(137)
        return real[name](*args, **kwargs)
    return call


def killed_swap(scratch, dest):
    for name in real:
        setattr(os, name, counted(name))
    swap_in(scratch, dest)


splitting.swap_in = killed_swap
sys.argv[0] = "split_data.py"
runpy.run_path(os.path.join(sys.argv.pop(1), "split_data.py"), run_name="__main__")
"""


def assert_one_whole_split(dest, seed):
    """dest holds exactly the split its manifest describes, of `seed`, and no scratch folder."""
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["seed"] == seed
    for side in ("train", "val"):
        assert sorted(os.listdir(dest / side)) == sorted(manifest[side])
        for name, files in manifest[side].items():
            assert sorted(os.listdir(dest / side / name)) == files
    assert sorted(os.listdir(dest)) == ["manifest.json", "train", "val"]


@pytest.mark.parametrize("step", range(1, 7))  # the manifest out, each side's two moves, the manifest in
def test_a_split_killed_at_any_step_of_its_swap_is_finished_by_the_next_run(tmp_path, step):
    dest = tmp_path / "data"
    split_sample(dest)  # an earlier split (seed 0), to be replaced by one of seed 1
    command = ["--source", str(SAMPLE_DIR), "--dest", str(dest), "--seed", "1"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT, str(step), ROOT, *command], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == 137, killed.stderr
    assert any(name.startswith(".split_data-") for name in os.listdir(dest))  # cut off halfway
    again = run_script("split_data.py", *command, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "note: finished moving in the split an interrupted run left in" in again.stderr
    assert_one_whole_split(dest, seed=1)


SPLITTING = (
    "import sys; from pathlib import Path; from zfnet.splitting import scratch_folder; "
    "scratch = scratch_folder(Path(sys.argv[1])); print('splitting', flush=True); sys.stdin.read()"
)


def test_a_second_split_into_one_folder_is_refused_naming_the_first_and_a_killed_ones_is_cleaned(tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    first = subprocess.Popen([sys.executable, "-c", SPLITTING, dest], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert first.stdout.readline() == b"splitting\n"  # it holds the folder now: no sleep, no race
        second = run_script("split_data.py", "--source", SAMPLE_DIR, "--dest", dest, timeout=300)
        assert second.returncode == 2 and len(second.stderr.splitlines()) == 1, second.stderr
        assert f"--dest {dest} is being split by process {first.pid} (" in second.stderr
        first.kill()  # kill -9: its scratch folder stays behind, its lock goes with it
        first.wait(timeout=60)
    finally:
        first.kill()
    assert any(name.startswith(".split_data-") for name in os.listdir(dest))
    third = run_script("split_data.py", "--source", SAMPLE_DIR, "--dest", dest, timeout=300)
    assert third.returncode == 0, third.stderr
    assert_one_whole_split(dest, seed=0)
