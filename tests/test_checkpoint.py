import errno
import os

import pytest
import torch

from model import ZFNet
from zfnet.checkpoint import load_checkpoint, model_payload, read_checkpoint, save_checkpoint
from zfnet.errors import UserError

PREPROCESS = {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
CLASSES = ["blue", "green", "red"]


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = ZFNet(num_classes=3, width="half", arch="alexnet")
    path = tmp_path / "best.pth"
    save_checkpoint(model_payload(model, CLASSES, PREPROCESS, epoch=4), path)
    return model, path


def test_a_checkpoint_rebuilds_the_exact_network_with_weights_only(saved):
    model, path = saved
    raw = torch.load(path, weights_only=True)  # no arbitrary code runs when reading it
    assert raw["classes"] == CLASSES and raw["preprocess"] == PREPROCESS and raw["epoch"] == 4
    assert raw["model_config"]["arch"] == "alexnet"
    loaded, checkpoint = load_checkpoint(path)
    assert not loaded.training
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(loaded(x), model.eval()(x))


def test_an_interrupted_save_keeps_the_old_checkpoint(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def dies_halfway(obj, file):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model_payload(model, CLASSES, PREPROCESS, epoch=5), path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["best.pth"]  # no temporary file left behind


def test_bad_checkpoints_are_user_errors(saved, tmp_path):
    model, path = saved
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pth").write_text("hello")
    torch.save(model.state_dict(), tmp_path / "raw.pth")  # a bare state_dict, as the seed saves
    cases = {
        "missing.pth": "not found",
        "cut.pth": "corrupt",
        "text.pth": "corrupt",
        "raw.pth": "not a zfnet checkpoint",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message):
            load_checkpoint(tmp_path / name)


def test_weights_that_do_not_fit_the_configuration_are_refused(saved, tmp_path):
    _, path = saved
    checkpoint = read_checkpoint(path)
    checkpoint["model_config"]["conv_channels"] = [96, 256, 384, 384, 256]
    save_checkpoint(checkpoint, tmp_path / "reshaped.pth")
    with pytest.raises(UserError, match="do not fit"):
        load_checkpoint(tmp_path / "reshaped.pth")
    checkpoint = read_checkpoint(path)
    checkpoint["classes"] = ["only", "two"]
    save_checkpoint(checkpoint, tmp_path / "classes.pth")
    with pytest.raises(UserError, match="class names"):
        load_checkpoint(tmp_path / "classes.pth")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["preprocess"].update(input_size=0), "input size 0"),
        (lambda c: c["preprocess"].update(input_size=-224), "input size -224"),
        (
            lambda c: (c["preprocess"].update(input_size=20000), c["model_config"].update(input_size=20000)),
            "GiB of fully connected weights",
        ),
        (lambda c: c["preprocess"].update(mean=["a", 0.5, 0.5]), "mean"),
        (lambda c: c["preprocess"].update(std=[0.5, 0.0, 0.5]), r"std \[0.5, 0.0, 0.5\] must be positive"),
        (lambda c: c["preprocess"].update(std=[0.5, float("nan"), 0.5]), "three finite numbers"),
        (lambda c: c["preprocess"].pop("mean"), "preprocessing is not"),
        (lambda c: c.pop("classes"), "not a zfnet checkpoint"),
        (lambda c: c.update(classes=["a", "a", "b"]), "class names repeat"),
        (lambda c: c.update(classes=[1, 2, 3]), "not a list of names"),
        (lambda c: c.update(class_names=["tench"]), "human-readable class names are not one name per class"),
        (lambda c: c.update(model={"layer1.conv.weight": [1, 2]}), "not a dict of named tensors"),
        (lambda c: c.update(model={k: v.long() for k, v in c["model"].items()}), "not floating-point"),
        (lambda c: c["model_config"].update(num_classes=True), "whole numbers"),
        (lambda c: c["model_config"].update(depth=9), "unusable model configuration"),
        (lambda c: c.update(epoch=-1), "epoch -1"),
    ],
)
def test_checkpoints_carrying_nonsense_are_refused_before_use(saved, tmp_path, change, message):
    _, path = saved
    checkpoint = read_checkpoint(path)
    change(checkpoint)
    save_checkpoint(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=message):
        load_checkpoint(tmp_path / "bad.pth")


def test_a_checkpoint_is_written_with_the_users_umask_and_leaves_no_debris(saved, tmp_path):
    model, _ = saved
    previous = os.umask(0o022)
    try:
        save_checkpoint(model_payload(model, CLASSES, PREPROCESS, epoch=1), tmp_path / "shared.pth")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.pth").stat().st_mode & 0o777 == 0o644


def test_a_full_disk_is_one_line_and_keeps_the_old_checkpoint(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def disk_full(obj, file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left on device; what was there before is unchanged"):
        save_checkpoint(model_payload(model, CLASSES, PREPROCESS, epoch=5), path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["best.pth"]


def test_a_disk_that_fills_while_torch_writes_is_one_line_and_keeps_the_old_checkpoint(saved, monkeypatch):
    """torch's own zip writer turns the write's ENOSPC into `RuntimeError: ... unexpected pos`."""
    model, path = saved
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class FillingFile:
        def __init__(self, file):
            self.file, self.written = file, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 1 << 16:  # the disk fills after 64 KiB
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exception):
            self.file.close()

    monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: FillingFile(real_fdopen(*args, **kwargs)))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch itself raises
        torch.save({"weights": torch.zeros(1 << 16)}, FillingFile(open(os.devnull, "wb")))
    with pytest.raises(UserError, match="No space left on device; what was there before is unchanged"):
        save_checkpoint(model_payload(model, CLASSES, PREPROCESS, epoch=5), path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["best.pth"]


def test_a_checkpoint_path_under_a_file_is_one_line(saved, tmp_path):
    model, _ = saved
    (tmp_path / "file").write_text("mine")
    with pytest.raises(UserError, match="it is a file, not a folder"):
        save_checkpoint(model_payload(model, CLASSES, PREPROCESS, epoch=1), tmp_path / "file" / "best.pth")
    assert (tmp_path / "file").read_text() == "mine"
