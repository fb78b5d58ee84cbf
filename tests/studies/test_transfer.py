from types import SimpleNamespace

import pytest
import torch

from tests.helpers import record_figure_texts, save_network, tiny_network
from zfnet.data import scan_classes, scan_split
from zfnet.errors import UserError
from zfnet.studies import transfer

PRETRAINED_CLASSES = ["cats", "dogs"]


@pytest.fixture
def pretrained(tmp_path):
    """An untrained two-class network's checkpoint: transfer cares about its layers, not their quality."""
    network = tiny_network(classes=PRETRAINED_CLASSES, fc_features=(64, 64))
    return save_network(tmp_path / "pretrained.pth", network, PRETRAINED_CLASSES)


def test_frozen_layers_stay_bit_identical_and_see_without_dropout(pretrained, colour_split):
    layers, checkpoint = transfer.frozen_layers(pretrained, "cpu")
    assert not layers.training and not any(parameter.requires_grad for parameter in layers.parameters())
    photos = scan_classes(colour_split / "train")
    paths = [path for name in photos for path in photos[name][:4]]
    labels = torch.arange(3).repeat_interleave(4)

    features = transfer.softmax_inputs(layers, paths, checkpoint["preprocess"], "cpu")
    softmax = transfer.fit_softmax(features, labels, 3)

    assert features.shape == (12, 64) and softmax.weight.shape == (3, 64)
    assert transfer.accuracy(softmax(features), labels) == 1.0  # it learned the photos it saw
    state = layers.state_dict()
    assert set(state) == {name for name in checkpoint["model"] if not name.startswith("classifier.")}
    assert all(torch.equal(state[name], checkpoint["model"][name]) for name in state)
    again = transfer.softmax_inputs(layers, paths, checkpoint["preprocess"], "cpu")
    assert torch.equal(again, features)  # no dropout: the same photo gives the same features


def test_draws_are_seeded_nested_and_keep_test_photos_apart(colour_split):
    classes, samples = scan_split(colour_split)
    photos, test = (transfer.by_class(classes, samples[side]) for side in ("train", "val"))
    assert photos == scan_classes(colour_split / "train") and test == scan_classes(colour_split / "val")
    args = SimpleNamespace(per_class=[2, 5], draws=2, seed=0, data="data")
    draws = transfer.draw_photos(photos, args)
    assert draws == transfer.draw_photos(photos, args)
    assert draws != transfer.draw_photos(photos, SimpleNamespace(**{**vars(args), "seed": 1}))
    train_0, train_1 = draws
    assert train_0 != train_1
    for name in photos:
        assert len(train_0[name]) == 5 and len(test[name]) == 4
        assert set(train_0[name]) <= set(photos[name])
        assert not set(train_0[name]) & set(test[name])
    with pytest.raises(UserError, match="class blue has 12 photos in data/train, fewer than --per-class 13"):
        transfer.draw_photos(photos, SimpleNamespace(**{**vars(args), "per_class": [13]}))
    transfer.draw_photos(photos, SimpleNamespace(**{**vars(args), "per_class": [12]}))  # all of them


def test_network_flags_rebuild_the_checkpoints_network(pretrained):
    _, checkpoint = transfer.frozen_layers(pretrained, "cpu")
    flags = transfer.network_flags(checkpoint["model_config"])
    assert flags == ["--arch", "zfnet", "--width", "half", "--conv-channels", "8,16,16,16,16", "--fc-features", "64,64"]


@pytest.mark.parametrize("draws, spread", [(3, "mean ± 1 std over 3 draws"), (1, None)])
def test_the_chart_explains_its_curves_and_error_bars(tmp_path, monkeypatch, draws, spread):
    accuracies = {"transfer_accuracy": 0.6, "transfer_sd": 0.05, "scratch_accuracy": 0.3, "scratch_sd": 0.04}
    rows = [{"per_class": count, "draws": draws, **accuracies} for count in (1, 4, 16)]
    texts = record_figure_texts(monkeypatch)
    transfer.plot(rows, 5, str(tmp_path / "transfer.png"), "Transfer")
    legend = {"frozen layers 1-7 + new softmax", "same network from scratch", "guessing at random"}
    assert legend <= set(texts), texts
    assert {"training photos per class (log scale)", "test accuracy (share of test photos right)"} <= set(texts)
    assert {"1", "4", "16"} <= set(texts)  # plain numbers at the counts measured, not 2^k
    assert (spread in texts) if spread else not any("std" in text for text in texts), texts
    assert any(text.startswith("What to look for:") for text in texts), texts
