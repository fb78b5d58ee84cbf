import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from model import ZFNet
from tests.helpers import (
    ON_CPU,
    PREPROCESS,
    ROOT,
    assert_one_line_error,
    assert_picture,
    call_script,
    tiny_network,
    write_photos,
)
from zfnet import recipes, training
from zfnet.checkpoint import load_checkpoint
from zfnet.data import PhotoCache, val_inputs
from zfnet.errors import UserError
from zfnet.runtime import Distributed, derived_seed


def run_train(data, out, *flags):
    return training.train(
        recipes.parse_args(
            ["--data", str(data), "--out", str(out), "--workers", "0", "--batch-size", "8", "--device", "cpu", *flags]
        )
    )


# Narrow fully connected layers keep checkpoints small where a test does not need the real size.
SMALL = ("--fc-features", "128,128")


def test_training_learns_and_writes_every_output(colour_split, tmp_path):
    out = tmp_path / "run"
    result = run_train(colour_split, out, "--epochs", "4", "--lr", "5e-4", "--snapshot-epochs", "0,1,3")
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result["best_accuracy"] >= 0.9  # three clearly different colours

    assert sorted(os.listdir(out)) == [
        ".zfnet-outputs",
        "best.pth",
        "class_indices.json",
        "confusion.png",
        "curves.png",
        "last.pth",
        "metrics.csv",
        "snapshots",
    ]
    assert sorted(os.listdir(out / "snapshots")) == ["epoch_000.pth", "epoch_001.pth", "epoch_003.pth"]
    initial = torch.load(out / "snapshots" / "epoch_000.pth", weights_only=True)
    torch.manual_seed(derived_seed(0, "init"))  # the run's seed 0: the weights it started from
    fresh = ZFNet(num_classes=3).state_dict()
    fresh["layer1.conv.weight"] *= recipes.RECIPES["fast"]["layer1_init_scale"]  # the default's small layer-1 start
    assert initial["epoch"] == 0 and all(torch.equal(initial["model"][name], fresh[name]) for name in fresh)
    model, best = load_checkpoint(out / "best.pth")
    assert best["classes"] == ["blue", "green", "red"]
    assert best["model_config"]["num_classes"] == 3 and best["model_config"]["width"] == "half"
    assert best["preprocess"] == {"input_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert best["val_accuracy"] == result["best_accuracy"]
    last = torch.load(out / "last.pth", weights_only=True)
    assert last["epoch"] == 4 and "optimizer" in last and last["train_config"]["lr"] == 5e-4
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_second"}
    assert float(rows[-1]["val_acc"]) == history[-1]["val_acc"]
    assert json.loads((out / "class_indices.json").read_text()) == {"0": "blue", "1": "green", "2": "red"}
    for image in ("curves.png", "confusion.png"):
        assert_picture(out / image, min_size=(500, 400))


def test_the_jpeg_cache_trains_as_the_raw_cache_does_and_the_run_records_it(colour_split, tmp_path, capsys):
    flags = ("--epochs", "4", "--lr", "5e-4", *SMALL)
    raw = run_train(colour_split, tmp_path / "raw", *flags)
    jpeg = run_train(colour_split, tmp_path / "jpeg", *flags, "--cache", "jpeg")
    printed = capsys.readouterr().out
    assert "photo cache: raw (--cache auto: the raw cache's 9 MB fits in 50% of the memory" in printed
    assert "photo cache: jpeg (--cache jpeg)" in printed
    assert raw["best_accuracy"] >= 0.9 and jpeg["best_accuracy"] >= 0.9
    assert abs(jpeg["history"][-1]["train_loss"] - raw["history"][-1]["train_loss"]) < 0.1
    assert torch.load(tmp_path / "jpeg" / "last.pth", weights_only=True)["photo_cache"] == "jpeg"
    assert sum(name.endswith(".jpegs") for name in os.listdir(colour_split / ".cache")) == 2  # train and val


def test_class_names_reach_the_checkpoints_and_predict_and_a_resume_keeps_them(colour_split, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("red Rot\ngreen Grün\nblue Blau\n")
    flags = ("--recipe", "tutorial", *SMALL)  # a constant rate: the run can be extended below
    run_train(colour_split, tmp_path / "run", "--epochs", "1", *flags, "--class-names", str(names))
    run_train(colour_split, tmp_path / "run", "--epochs", "2", "--resume")  # without the flag: the names stay
    for checkpoint in ("best.pth", "last.pth"):
        saved = torch.load(tmp_path / "run" / checkpoint, weights_only=True)
        assert saved["classes"] == ["blue", "green", "red"] and saved["class_names"] == ["Blau", "Grün", "Rot"]
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=True)["epoch"] == 2
    indices = json.loads((tmp_path / "run" / "class_indices.json").read_text(encoding="utf-8"))
    assert indices == {"0": "Blau", "1": "Grün", "2": "Rot"}
    photo = colour_split / "val" / "red" / "000.jpg"
    predicted = call_script("predict.py", photo, "--checkpoint", tmp_path / "run" / "best.pth")
    assert predicted.returncode == 0 and predicted.stdout.split(": ")[1].split()[0] in {"Blau", "Grün", "Rot"}


def test_a_class_names_file_that_misses_a_folder_stops_training_in_one_line(colour_split, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("red Rot\ngreen Grün\n")
    result = call_script("train.py", "--data", colour_split, "--out", tmp_path / "run", *ON_CPU, "--class-names", names)
    assert_one_line_error(result, "names no class for 1 of the 3 class folders: blue")
    assert not (tmp_path / "run" / "last.pth").exists()


def test_top5_accuracy_counts_what_a_naive_loop_counts():
    classes = 8
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (13, 3, 224, 224), dtype=torch.uint8, generator=generator).numpy()
    labels = torch.randint(0, classes, (13,), generator=generator)
    cache = PhotoCache(pixels, labels)
    model = tiny_network(classes=[str(index) for index in range(classes)])
    runtime, plain = Distributed("cpu"), torch.autocast("cpu", enabled=False)
    _, right, top5, _ = training.evaluate(model, cache, torch.arange(13), classes, 4, runtime, plain)
    hits, top1 = 0, 0
    with torch.no_grad():
        for row in range(13):
            logits = model(val_inputs(cache, torch.tensor([row]), PREPROCESS))[0].tolist()
            ranked = sorted(range(classes), key=lambda label: -logits[label])
            hits += int(labels[row]) in ranked[:5]
            top1 += int(labels[row]) == ranked[0]
    assert (right, top5) == (top1, hits) and 0 < hits < 13
    five = tiny_network(classes=[str(index) for index in range(5)])
    assert training.evaluate(five, PhotoCache(pixels, labels % 5), torch.arange(13), 5, 4, runtime, plain)[2] is None


def test_a_run_of_more_than_five_classes_reports_top5_accuracy(tmp_path):
    data = tmp_path / "data"
    for index in range(6):
        colour = (40 * index, 255 - 40 * index, (97 * index) % 256)
        write_photos(data / "train" / f"class{index}", colour, 3, seed=index)
        write_photos(data / "val" / f"class{index}", colour, 1, seed=50 + index)
    result = run_train(data, tmp_path / "run", "--epochs", "1", *SMALL)
    with open(tmp_path / "run" / "metrics.csv") as file:
        (row,) = list(csv.DictReader(file))
    assert float(row["val_top5"]) == result["history"][0]["val_top5"] >= float(row["val_acc"])


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(colour_split, tmp_path, monkeypatch, capsys):
    run_train(colour_split, tmp_path / "straight", "--epochs", "3", *SMALL)

    def killed_after_saving(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # the process dies right after epoch 1's checkpoints
        patch.setattr(training, "write_reports", killed_after_saving)
        with pytest.raises(KeyboardInterrupt):
            run_train(colour_split, tmp_path / "resumed", "--epochs", "3", *SMALL)
    assert torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)["epoch"] == 1
    assert f"continue with `python train.py --out {tmp_path / 'resumed'} --resume`" in capsys.readouterr().err
    run_train(colour_split, tmp_path / "resumed", "--epochs", "3", "--resume")

    straight, resumed = weights(tmp_path / "straight" / "last.pth"), weights(tmp_path / "resumed" / "last.pth")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    rows = [list(csv.reader(open(tmp_path / run / "metrics.csv"))) for run in ("straight", "resumed")]
    assert len(rows[0]) == 4
    assert [row[:5] for row in rows[0]] == [row[:5] for row in rows[1]]  # same losses and accuracies


def test_the_tutorial_recipe_can_be_extended_but_a_scheduled_run_cannot(colour_split, tmp_path):
    run_train(colour_split, tmp_path / "tutorial", "--epochs", "1", "--recipe", "tutorial", *SMALL)
    result = run_train(colour_split, tmp_path / "tutorial", "--epochs", "2", "--resume")
    assert [row["epoch"] for row in result["history"]] == [1, 2]
    last = torch.load(tmp_path / "tutorial" / "last.pth", weights_only=True)
    assert last["optimizer"]["param_groups"][0]["lr"] == 2e-4  # constant, as the tutorial's
    run_train(colour_split, tmp_path / "fast", "--epochs", "1", *SMALL)
    spans = "--epochs cannot change from 1 to 2: its fast recipe's learning-rate schedule spans the whole run"
    with pytest.raises(UserError, match=spans + ", so it cannot be extended"):
        run_train(colour_split, tmp_path / "fast", "--epochs", "2", "--resume")


def test_the_same_seed_repeats_a_run_exactly(colour_split, tmp_path):
    run_train(colour_split, tmp_path / "a", "--epochs", "1", "--seed", "3", *SMALL)
    run_train(colour_split, tmp_path / "b", "--epochs", "1", "--seed", "3", *SMALL)
    run_train(colour_split, tmp_path / "c", "--epochs", "1", "--seed", "4", *SMALL)
    a, b, c = (weights(tmp_path / run / "last.pth") for run in "abc")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not torch.equal(a["layer1.conv.weight"], c["layer1.conv.weight"])


def test_an_existing_run_is_never_overwritten(colour_split, tmp_path, capsys):
    run_train(colour_split, tmp_path / "run", "--epochs", "1", *SMALL)
    before = (tmp_path / "run" / "last.pth").read_bytes()
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        run_train(colour_split, tmp_path / "run", "--epochs", "2")
    with pytest.raises(UserError, match="--lr cannot change from 0.0004 to 0.1"):
        run_train(colour_split, tmp_path / "run", "--epochs", "2", "--resume", "--lr", "0.1")
    run_train(colour_split, tmp_path / "run", "--epochs", "1", "--resume")
    assert "already trained 1 epochs" in capsys.readouterr().out
    assert (tmp_path / "run" / "last.pth").read_bytes() == before


def run_script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_bad_data_folders_fail_with_one_line(colour_split, tmp_path):
    (colour_split / "val" / "red").rename(colour_split / "val" / "orange")
    cases = {str(tmp_path / "nowhere"): "data folder not found", str(colour_split): "different classes"}
    for data, message in cases.items():
        result = run_script("train.py", "--data", data, "--out", str(tmp_path / "out"))
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_two_process_torchrun_trains_and_only_rank_0_writes(colour_split, tmp_path):
    out = tmp_path / "ddp"
    result = run_script(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "train.py",
        "--data",
        str(colour_split),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "6",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--lr",
        "5e-4",
        *SMALL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(2 processes, " in result.stdout
    assert result.stdout.count("epoch   2/2") == 1  # only rank 0 prints
    model, checkpoint = load_checkpoint(out / "last.pth")
    assert checkpoint["epoch"] == 2
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def torchrun(launch, data, out, *flags):
    """The command of a torchrun launch of a small train.py run on the CPU."""
    training = ["--data", data, "--out", out, "--batch-size", "6", "--workers", "0", "--device", "cpu", *SMALL]
    return [sys.executable, "-m", "torch.distributed.run", *launch, "train.py", *map(str, training + list(flags))]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def same_weights(*runs):
    first, *others = (torch.load(run / "last.pth", weights_only=True)["model"] for run in runs)
    return all(torch.equal(first[name], other[name]) for other in others for name in first)


def test_two_nodes_on_loopback_end_with_the_weights_of_one_node_of_two_processes(colour_split, tmp_path):
    # One thread a process in both: torchrun gives each of several processes of a node one, and
    # a kernel's sums differ in their last bits with the number of threads that share them.
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    one_node = subprocess.run(
        torchrun(["--standalone", "--nproc-per-node", "2"], colour_split, tmp_path / "one", "--epochs", "2"),
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one_node.returncode == 0, one_node.stderr[-2000:]
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    for rank in (0, 1):  # as two machines would start it, each with its own launch; node 0 hosts the rendezvous
        launch = ["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank), "--rdzv-backend", "c10d"]
        launch += ["--rdzv-endpoint", endpoint, "--rdzv-id", "loopback", "--rdzv-conf", f"is_host={int(rank == 0)}"]
        command = torchrun(launch, colour_split, tmp_path / "two", "--epochs", "2")
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        nodes.append(subprocess.Popen(command, cwd=ROOT, env=environment, **pipes))
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum("(2 processes, " in out for out, _ in outputs) == 1  # one writer and reporter for both nodes
    assert same_weights(tmp_path / "one", tmp_path / "two")


def worker_processes(parent):
    """The process ids whose parent is `parent` (torchrun's agent starts one per worker)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(entry))
    return children


def test_a_worker_killed_mid_run_is_restarted_and_the_run_ends_as_an_uninterrupted_one(colour_split, tmp_path):
    launch = ["--standalone", "--nproc-per-node", "2"]
    command = torchrun(launch, colour_split, tmp_path / "straight", "--epochs", "5")
    straight = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    out = tmp_path / "killed"
    command = torchrun([*launch, "--max-restarts", "1"], colour_split, out, "--epochs", "5")  # no --resume needed
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "last.pth").exists() and time.monotonic() < deadline:  # epoch 1 is saved: kill in epoch 2
        time.sleep(0.02)
    workers = worker_processes(job.pid)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGKILL)
    stdout, stderr = job.communicate(timeout=300)
    errors = [line for line in stderr.splitlines() if "rror" in line]  # the workers' own, not torchrun's summary
    assert job.returncode == 0, "\n".join(errors)[-3000:]
    assert re.search(r"resuming .* after epoch [1-4] of 5", stdout), stdout  # the restart went on from last.pth
    assert same_weights(tmp_path / "straight", out)


def test_the_top_level_class_indices_are_train_pys_mapping_for_flower_photos():
    sample = os.path.join(ROOT, "samples", "flower_photos")
    classes = sorted(name for name in os.listdir(sample) if os.path.isdir(os.path.join(sample, name)))
    with open(os.path.join(ROOT, "class_indices.json")) as file:
        assert json.load(file) == training.class_indices(classes)
    assert classes == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


def test_a_run_killed_between_its_last_checkpoint_and_its_reports_gets_them_on_resume(
    colour_split, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    real_write_reports = training.write_reports

    def killed_at_the_last_epoch(out_folder, history, *args):
        if len(history) == 2:
            raise KeyboardInterrupt
        real_write_reports(out_folder, history, *args)

    with monkeypatch.context() as patch:
        patch.setattr(training, "write_reports", killed_at_the_last_epoch)
        with pytest.raises(KeyboardInterrupt):
            run_train(colour_split, out, "--epochs", "2", *SMALL)
    (out / "metrics.csv").unlink()  # as if the kill came before the first report, too
    debris = out / ".zfnet-partial-killed"
    debris.write_bytes(b"half a checkpoint")
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 2
    run_train(colour_split, out, "--epochs", "2", "--resume")
    with open(out / "metrics.csv") as file:
        assert [int(row["epoch"]) for row in csv.DictReader(file)] == [1, 2]
    assert (out / "curves.png").exists() and (out / "confusion.png").exists()
    assert not debris.exists()


def test_the_end_of_run_summary_reports_disk_use(colour_split, tmp_path, capsys):
    run_train(colour_split, tmp_path / "run", "--epochs", "1", *SMALL)
    out = capsys.readouterr().out
    assert f"MB in {tmp_path / 'run'}/ (best.pth" in out and "last.pth holds the optimizer state" in out
    assert "the decoded-photo cache" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--fc-features=-5,3",), "--fc-features must not be negative"),
        (("--conv-channels", "48,0,0,0,0"), "layers 1 and 5 kept"),
        (("--snapshot-epochs", "1,3", "--epochs", "2"), "--snapshot-epochs must lie between 0 (the initial weights)"),
        (("--snapshot-epochs=-1", "--epochs", "2"), "--snapshot-epochs must lie between 0 (the initial weights)"),
        (("--label-smoothing", "1"), "--label-smoothing must lie in [0, 1)"),
    ],
)
def test_settings_that_make_no_sense_are_refused_before_any_work(colour_split, tmp_path, flags, message):
    result = call_script("train.py", "--data", colour_split, "--out", tmp_path / "out", *flags)
    assert_one_line_error(result, message)
    assert not (colour_split / ".cache").exists() and not (tmp_path / "out").exists()


def test_an_out_folder_holding_the_users_files_is_refused_and_kept(colour_split, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.txt").write_text("mine")
    result = call_script("train.py", "--data", colour_split, "--out", out, "--epochs", "1")
    assert_one_line_error(result, "already holds files that zfnet did not write")
    assert os.listdir(out) == ["chapter1.txt"]
    (tmp_path / "file").write_text("mine")
    assert_one_line_error(
        call_script("train.py", "--data", colour_split, "--out", tmp_path / "file"), "is a file, not a folder"
    )


def test_renormalisation_caps_every_filters_rms_after_a_step():
    torch.manual_seed(0)
    model = tiny_network(input_size=64)
    with torch.no_grad():
        model.layer1.conv.weight[:4].mul_(50)  # four filters far above the radius, the rest below
    below = model.layer1.conv.weight[4:].clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    inputs, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    training.train_step(model, optimizer, scheduler, inputs, labels, torch.autocast("cpu", enabled=False), 0.0, 0.1)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            rms = module.weight.square().mean(dim=(1, 2, 3)).sqrt()
            assert (rms <= 0.1 + 1e-6).all()
    assert torch.allclose(model.layer1.conv.weight[:4].square().mean(dim=(1, 2, 3)).sqrt(), torch.tensor(0.1))
    assert not torch.equal(model.layer1.conv.weight[4:], below)  # the step itself still moved them


def test_a_resume_that_names_only_the_run_continues_it_on_its_own_data(colour_split, tmp_path, monkeypatch):
    """The README's `train.py --out RUN --resume` for a run not trained on the default
    flower_data: a flag's default is not a change of it."""
    out = tmp_path / "run"
    run_train(colour_split, out, "--epochs", "2", "--recipe", "tutorial", *SMALL)
    monkeypatch.chdir(tmp_path)  # no flower_data here
    config = recipes.parse_args(["--out", str(out), "--resume", "--epochs", "3", "--workers", "0", "--device", "cpu"])
    assert config.explicit == ["device", "epochs", "out", "resume", "workers"]
    summary = training.train(config)
    assert config.data == str(colour_split) and [row["epoch"] for row in summary["history"]] == [1, 2, 3]


def test_a_resume_on_a_changed_split_stops_in_one_line_saying_what_changed(colour_split, tmp_path):
    out = tmp_path / "run"
    run_train(colour_split, out, "--epochs", "1", "--recipe", "tutorial", *SMALL)
    (colour_split / "train" / "red" / "000.jpg").unlink()  # the split was redone, or changed by hand
    before = (out / "last.pth").read_bytes()
    arguments = ("--data", colour_split, "--out", out, "--epochs", "2", "--resume", *ON_CPU)
    assert_one_line_error(
        call_script("train.py", *arguments),
        f"{colour_split} is not the split {out} was trained on (35 train / 12 val photos, the run started on "
        f"36 train / 12 val photos); resume it on the split it started on, or start a new run with another --out",
    )
    assert (out / "last.pth").read_bytes() == before


def test_a_run_records_its_whole_recipe_and_a_resume_keeps_it(colour_split, tmp_path, monkeypatch):
    run_train(colour_split, tmp_path / "straight", "--epochs", "2", "--recipe", "tutorial", *SMALL)
    run_train(colour_split, tmp_path / "resumed", "--epochs", "1", "--recipe", "tutorial", *SMALL)
    saved = torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)["train_config"]["recipe_settings"]
    assert saved == recipes.RECIPES["tutorial"]
    # Today's recipe changes after the run started; the run goes on as it began.
    monkeypatch.setitem(recipes.RECIPES, "tutorial", {**recipes.RECIPES["tutorial"], "jitter": 0.5, "lr": 1e-2})
    run_train(colour_split, tmp_path / "resumed", "--epochs", "2", "--resume")
    straight, resumed = weights(tmp_path / "straight" / "last.pth"), weights(tmp_path / "resumed" / "last.pth")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_a_run_saved_before_recipes_were_recorded_still_resumes(colour_split, tmp_path):
    run_train(colour_split, tmp_path / "straight", "--epochs", "2", "--recipe", "tutorial", *SMALL)
    run_train(colour_split, tmp_path / "old", "--epochs", "1", "--recipe", "tutorial", *SMALL)
    state = torch.load(tmp_path / "old" / "last.pth", weights_only=True)
    del state["train_config"]["recipe_settings"]
    state["train_config"]["recipe"] = "seed"  # the tutorial recipe's name back then
    torch.save(state, tmp_path / "old" / "last.pth")
    run_train(colour_split, tmp_path / "old", "--epochs", "2", "--resume")
    straight, old = weights(tmp_path / "straight" / "last.pth"), weights(tmp_path / "old" / "last.pth")
    assert all(torch.equal(straight[name], old[name]) for name in straight)


def test_a_fast_run_saved_before_recipes_were_recorded_resumes_with_layer1_as_it_began(
    colour_split, tmp_path, monkeypatch
):
    usual = ("--recipe", "fast", "--set", "layer1_init_scale=1", "layer1_lr_scale=1")
    run_train(colour_split, tmp_path / "straight", "--epochs", "2", *usual, *SMALL)

    def killed_after_saving(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # the process dies right after epoch 1's checkpoints
        patch.setattr(training, "write_reports", killed_after_saving)
        with pytest.raises(KeyboardInterrupt):
            run_train(colour_split, tmp_path / "old", "--epochs", "2", *usual, *SMALL)
    state = torch.load(tmp_path / "old" / "last.pth", weights_only=True)
    del state["train_config"]["recipe_settings"]  # fast's layer 1 started as usual back then
    torch.save(state, tmp_path / "old" / "last.pth")
    label = "fast, layer1_init_scale=1, layer1_lr_scale=1"
    assert recipes.recipe_label("fast", recipes.recorded_settings(state)) == label
    table = run_script("bench/filter_smoothness.py", "--checkpoint", str(tmp_path / "old" / "best.pth"))
    assert f"| {label} |" in table.stdout, table.stdout + table.stderr
    run_train(colour_split, tmp_path / "old", "--epochs", "2", "--resume")
    straight, old = weights(tmp_path / "straight" / "last.pth"), weights(tmp_path / "old" / "last.pth")
    assert all(torch.equal(straight[name], old[name]) for name in straight)
    resumed = torch.load(tmp_path / "old" / "last.pth", weights_only=True)["train_config"]["recipe_settings"]
    assert (resumed["layer1_lr_scale"], recipes.RECIPES["fast"]["layer1_lr_scale"]) == (1.0, 5.0)


def test_a_small_layer1_start_and_its_own_rate_are_applied(colour_split):
    usual = ("--set", "layer1_init_scale=1", "layer1_lr_scale=1")
    plain = recipes.parse_args(["--data", str(colour_split), *usual, *SMALL])
    given = ("--set", "layer1_init_scale=0.1", "layer1_lr_scale=5")
    scaled = recipes.parse_args(["--data", str(colour_split), *given, *SMALL])
    assert scaled.recipe_settings == {**plain.recipe_settings, "layer1_init_scale": 0.1, "layer1_lr_scale": 5.0}
    torch.manual_seed(0)
    a = recipes.build_model(plain, 3)
    torch.manual_seed(0)
    b = recipes.build_model(scaled, 3)
    assert torch.allclose(b.layer1.conv.weight, 0.1 * a.layer1.conv.weight)
    assert torch.equal(b.layer2.conv.weight, a.layer2.conv.weight)
    optimizer, _ = recipes.build_optimizer(b, scaled, steps_per_epoch=10)
    rates = {group["lr"] for group in optimizer.param_groups}
    assert rates == {plain.lr, 5 * plain.lr}


def test_a_setting_given_is_recorded_and_a_resume_may_repeat_it_but_not_change_it(colour_split, tmp_path, capsys):
    variant = ("--recipe", "tutorial", "--set", "optimizer=sgd", "momentum=0.5", "warmup_epochs=1")
    run_train(colour_split, tmp_path / "straight", "--epochs", "2", *variant, *SMALL)
    assert "recipe tutorial, optimizer=sgd, momentum=0.5, warmup_epochs=1\n" in capsys.readouterr().out
    run_train(colour_split, tmp_path / "resumed", "--epochs", "1", *variant, *SMALL)
    saved = torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)["train_config"]["recipe_settings"]
    assert saved == {**recipes.RECIPES["tutorial"], "optimizer": "sgd", "momentum": 0.5, "warmup_epochs": 1}
    resume = ("--data", colour_split, "--out", tmp_path / "resumed", "--epochs", "2", "--resume", "--workers", "0")
    changed = call_script("train.py", *resume, "--set", "momentum=0.9")
    assert_one_line_error(changed, "--set momentum cannot change from 0.5 to 0.9")
    run_train(colour_split, tmp_path / "resumed", "--epochs", "2", "--resume", "--set", "momentum=0.5")
    straight, resumed = weights(tmp_path / "straight" / "last.pth"), weights(tmp_path / "resumed" / "last.pth")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_a_recipe_is_labelled_with_what_a_run_changed_in_it():
    fast = recipes.parse_args([])
    assert recipes.recipe_label("fast", fast.recipe_settings) == "fast"
    changed = recipes.parse_args(["--lr", "6e-4", "--set", "layer1_lr_scale=20", "schedule=constant"])
    label = recipes.recipe_label("fast", changed.recipe_settings)
    assert label == "fast, layer1_lr_scale=20, lr=0.0006, schedule=constant"
    assert recipes.recipe_label("seed", recipes.RECIPES["tutorial"]) == "seed"  # the tutorial's old name
    assert recipes.recipe_label("gone", {"lr": 1.0}) == "gone"  # a recipe no longer defined


@pytest.mark.parametrize(
    "given, fragment",
    [
        ("layer1_lr_scale=0", "layer1_lr_scale must be above 0; got 0"),
        ("layer1_init_scale", "expected NAME=VALUE with NAME one of crop_scale,"),
        ("lr=1e-3", "expected NAME=VALUE"),
        ("warmup_epochs=1.5", "warmup_epochs must be a whole number; got '1.5'"),
        ("crop_scale=0", "crop_scale must be (0, 1]; got 0"),
        ("ema=1", "ema must be [0, 1); got 1"),
        ("weight_decay=-1", "weight_decay must be at least 0; got -1"),
        ("jitter=nan", "jitter must be [0, 1); got nan"),
        ("schedule=linear", "schedule must be one of constant, cosine, plateau; got 'linear'"),
    ],
)
def test_a_bad_setting_stops_training_in_one_line(colour_split, tmp_path, given, fragment):
    result = call_script("train.py", "--data", colour_split, "--out", tmp_path / "run", "--set", given)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_the_features_recipe_starts_layer1_small_and_trains_it_faster(colour_split):
    usual = recipes.parse_args(["--data", str(colour_split), "--recipe", "tutorial", *SMALL])
    features = recipes.parse_args(["--data", str(colour_split), "--recipe", "features", *SMALL])
    torch.manual_seed(0)
    a = recipes.build_model(usual, 3)
    torch.manual_seed(0)
    b = recipes.build_model(features, 3)
    assert torch.allclose(b.layer1.conv.weight, 0.1 * a.layer1.conv.weight)
    optimizer, _ = recipes.build_optimizer(b, features, steps_per_epoch=10)
    assert isinstance(optimizer, torch.optim.AdamW)
    by_name = dict(zip((name for name, _ in b.named_parameters()), optimizer.param_groups))
    assert by_name["layer1.conv.weight"]["initial_lr"] == pytest.approx(4e-3)
    assert by_name["layer2.conv.weight"]["initial_lr"] == pytest.approx(4e-4)
    assert by_name["layer2.conv.weight"]["lr"] == pytest.approx(4e-4 / 20)  # the first step of a 2-epoch warm-up
    assert by_name["layer2.conv.weight"]["weight_decay"] == 0.5 and by_name["layer2.conv.bias"]["weight_decay"] == 0
    # AdamW shrinks a weight by rate x decay per step: layer 1's faster rate must not fade it faster.
    shrink = {name: group["initial_lr"] * group["weight_decay"] for name, group in by_name.items()}
    assert shrink["layer1.conv.weight"] == pytest.approx(shrink["layer2.conv.weight"])


def test_a_run_recorded_before_a_setting_existed_resumes_with_that_setting_off(colour_split, tmp_path):
    run_train(colour_split, tmp_path / "straight", "--epochs", "2", "--recipe", "tutorial", *SMALL)
    run_train(colour_split, tmp_path / "old", "--epochs", "1", "--recipe", "tutorial", *SMALL)
    state = torch.load(tmp_path / "old" / "last.pth", weights_only=True)
    del state["train_config"]["recipe_settings"]["cutmix"]
    torch.save(state, tmp_path / "old" / "last.pth")
    run_train(colour_split, tmp_path / "old", "--epochs", "2", "--resume")
    straight, old = weights(tmp_path / "straight" / "last.pth"), weights(tmp_path / "old" / "last.pth")
    assert all(torch.equal(straight[name], old[name]) for name in straight)
    resumed = torch.load(tmp_path / "old" / "last.pth", weights_only=True)["train_config"]["recipe_settings"]
    assert resumed["cutmix"] == 0


def test_cutmix_mixes_photos_and_labels_by_area_and_a_resumed_run_repeats_it(colour_split, tmp_path, monkeypatch):
    steps = []
    real_step = training.train_step

    def recording_step(model, optimizer, scheduler, inputs, targets, *args):
        steps.append(targets.clone())
        return real_step(model, optimizer, scheduler, inputs, targets, *args)

    with monkeypatch.context() as patch:
        patch.setattr(training, "train_step", recording_step)
        run_train(colour_split, tmp_path / "straight", "--epochs", "2", "--recipe", "features", *SMALL)
    for targets in steps:
        assert targets.dtype == torch.float32 and torch.allclose(targets.sum(1), torch.ones(len(targets)))
        # One patch per batch: each photo keeps a share lam of its own label and takes 1 - lam
        # of its neighbour's (the same class's photo leaves it whole).
        mixed = targets[(targets > 0) & (targets < 1)]
        assert mixed.numel() > 0
        lam = mixed.max()
        assert all(torch.isclose(value, lam) or torch.isclose(value, 1 - lam) for value in mixed)

    def killed_after_saving(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(training, "write_reports", killed_after_saving)
        with pytest.raises(KeyboardInterrupt):
            run_train(colour_split, tmp_path / "resumed", "--epochs", "2", "--recipe", "features", *SMALL)
    run_train(colour_split, tmp_path / "resumed", "--epochs", "2", "--resume")
    straight, resumed = weights(tmp_path / "straight" / "last.pth"), weights(tmp_path / "resumed" / "last.pth")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    straight, resumed = (torch.load(tmp_path / run / "last.pth", weights_only=True) for run in ("straight", "resumed"))
    assert all(torch.equal(straight["model"][name], resumed["model"][name]) for name in straight["model"])
    assert straight["average_updates"] == resumed["average_updates"]
    for name, tensor in straight["training_weights"].items():
        assert torch.equal(tensor, resumed["training_weights"][name])
    assert resumed["train_config"]["recipe_settings"]["cutmix"] == 1.0


def test_the_moving_average_follows_a_naive_loop():
    layer = torch.nn.Linear(3, 2)
    average = recipes.moving_average(layer, decay=0.95)
    expected = None
    for updates in range(40):
        with torch.no_grad():
            layer.weight.copy_(torch.randn(2, 3))
        average.update_parameters(layer)
        if expected is None:
            expected = layer.weight.detach().clone()  # the first update copies
        else:
            decay = min(0.95, (1 + updates) / (10 + updates))
            expected = decay * expected + (1 - decay) * layer.weight.detach()
        assert torch.allclose(average.module.weight, expected, atol=1e-6)


def test_a_moving_average_is_kept_beside_unchanged_training(colour_split, tmp_path, monkeypatch):
    run_train(
        colour_split, tmp_path / "plain", "--epochs", "2", "--recipe", "tutorial", "--snapshot-epochs", "0", *SMALL
    )
    monkeypatch.setitem(recipes.RECIPES, "tutorial", {**recipes.RECIPES["tutorial"], "ema": 0.9})
    averaged = run_train(
        colour_split, tmp_path / "averaged", "--epochs", "2", "--recipe", "tutorial", "--snapshot-epochs", "0,2", *SMALL
    )
    plain = torch.load(tmp_path / "plain" / "last.pth", weights_only=True)
    last = torch.load(tmp_path / "averaged" / "last.pth", weights_only=True)
    # The average only watches: the training weights are those of the same run without it.
    assert all(torch.equal(plain["model"][name], last["training_weights"][name]) for name in plain["model"])
    assert not torch.equal(last["model"]["layer1.conv.weight"], last["training_weights"]["layer1.conv.weight"])
    assert last["average_updates"] == 2 * 5  # 36 photos in batches of 8: 5 steps an epoch
    assert [row["training_weights_val_acc"] for row in averaged["history"]] == [
        row["val_acc"] for row in plain["history"]
    ]
    # What the run keeps, validates and snapshots is the average, which starts where training does.
    final = torch.load(tmp_path / "averaged" / "snapshots" / "epoch_002.pth", weights_only=True)
    assert all(torch.equal(final["model"][name], last["model"][name]) for name in final["model"])
    start, initial = (
        torch.load(tmp_path / run / "snapshots" / "epoch_000.pth", weights_only=True) for run in ("averaged", "plain")
    )
    assert all(torch.equal(start["model"][name], initial["model"][name]) for name in start["model"])
    best = torch.load(tmp_path / "averaged" / "best.pth", weights_only=True)
    assert best["val_accuracy"] == max(row["val_acc"] for row in averaged["history"])


def test_a_run_with_a_moving_average_but_no_training_weights_is_refused(colour_split, tmp_path):
    run_train(colour_split, tmp_path / "run", "--epochs", "1", "--recipe", "features", *SMALL)
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    del state["training_weights"]
    torch.save(state, tmp_path / "run" / "last.pth")
    result = call_script("train.py", "--data", colour_split, "--out", tmp_path / "run", "--epochs", "2", "--resume")
    assert_one_line_error(result, "the training weights are missing")


def test_the_paper_recipe_sets_the_papers_settings_and_flags_given_win():
    config = recipes.parse_args(["--recipe", "paper"])
    assert (config.epochs, config.batch_size, config.width) == (70, 128, "full")
    settings = config.recipe_settings
    paper = (settings["optimizer"], settings["momentum"], config.lr, settings["renorm_radius"])
    assert paper == ("sgd", 0.9, 1e-2, 0.1)
    assert settings["schedule"] == "plateau" and config.label_smoothing == 0.0
    config = recipes.parse_args(["--recipe", "paper", "--epochs", "3", "--width", "half"])
    assert (config.epochs, config.batch_size, config.width) == (3, 128, "half")
    assert "Zeiler & Fergus 2014, section 3" in " ".join(call_script("train.py", "--help").stdout.split())


def test_the_plateau_schedule_drops_the_rate_as_torchs_reduce_on_plateau_does():
    errors = [0.9, 0.8, 0.8, 0.7995, 0.81, 0.8, 0.79, 0.6, 0.61, 0.6, 0.6, 0.65, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.5]
    ours_parameter, theirs_parameter = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    ours = torch.optim.SGD([ours_parameter], lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(ours, recipes.RateSchedule("plateau", total=100, warmup=0))
    theirs = torch.optim.SGD([theirs_parameter], lr=0.01, momentum=0.9)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        theirs,
        factor=0.1,
        patience=recipes.PLATEAU_PATIENCE - 1,  # torch drops after more than `patience` epochs, we after PATIENCE
        threshold=recipes.PLATEAU_MIN_FALL,
        threshold_mode="abs",
    )
    rates = []
    for error in errors:
        for _ in range(3):  # an epoch's steps
            ours.step()
            scheduler.step()
        scheduler.lr_lambdas[0].observe(scheduler, error)
        reference.step(error)
        rates.append(ours.param_groups[0]["lr"])
        assert rates[-1] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12)
    assert rates[-1] == pytest.approx(1e-4)  # two drops in this history


def test_a_paper_recipe_run_resumes_exactly_across_a_drop_of_the_rate(colour_split, tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "PLATEAU_PATIENCE", 1)  # a drop after any epoch without a new lowest error
    monkeypatch.setattr(recipes, "PLATEAU_MIN_FALL", 2.0)  # every epoch: no fall counts
    flags = ("--recipe", "paper", "--epochs", "3", "--width", "half", "--lr", "1e-3", *SMALL)
    straight = run_train(colour_split, tmp_path / "straight", *flags)
    run_train(colour_split, tmp_path / "resumed", *flags[:3], "2", *flags[4:])
    resumed = run_train(colour_split, tmp_path / "resumed", "--epochs", "3", "--resume")
    assert straight["history"][-1]["val_loss"] == resumed["history"][-1]["val_loss"]
    a, b = (torch.load(tmp_path / run / "last.pth", weights_only=True) for run in ("straight", "resumed"))
    assert all(torch.equal(a["model"][name], b["model"][name]) for name in a["model"])
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.1**2)  # a drop after epochs 2 and 3
    assert a["train_config"]["recipe_settings"]["schedule"] == "plateau" and a["train_config"]["batch_size"] == 8
