import pytest
import torch

from model import ZFNet
from tests.helpers import record_figure_texts, variant_parameters
from zfnet.studies import ablation


def test_variants_scale_the_paper_sizes_to_the_base_width():
    assert ablation.variant_widths("full", "half") == ([48, 128, 192, 192, 128], [2048, 2048])
    assert ablation.variant_widths("no-layers3-4-6-7", "half") == ([48, 128, 0, 0, 128], [0, 0])
    assert ablation.variant_widths("wider-layers3-5", "half") == ([48, 128, 256, 512, 256], [2048, 2048])
    # At the paper's own widths the variants are exactly its table 3 sizes.
    assert ablation.variant_widths("wider-layers3-5", "full") == ([96, 256, 512, 1024, 512], [4096, 4096])
    assert ablation.variant_widths("wider-layers6-7", "full")[1] == [8192, 8192]
    assert ablation.variant_widths("narrower-layers6-7", "full")[1] == [2048, 2048]


@pytest.mark.parametrize("name", list(ablation.VARIANTS))
def test_every_variant_builds_and_classifies(name):
    conv_channels, fc_features = ablation.variant_widths(name, "half")
    model = ZFNet(num_classes=5, conv_channels=conv_channels, fc_features=fc_features).eval()
    assert model.conv_layers == [n for n in range(1, 6) if conv_channels[n - 1]]
    assert model.fc_layers == [n for n in (6, 7) if fc_features[n - 6]]
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 5)


def test_parameter_counts_match_a_hand_count():
    conv1 = 3 * 7 * 7 * 48 + 48
    conv2 = 48 * 5 * 5 * 128 + 128
    pooled = 128 * 6 * 6  # layer 5's 128 maps, pooled to 6x6
    full = (
        conv1
        + conv2
        + (128 * 9 * 192 + 192)
        + (192 * 9 * 192 + 192)
        + (192 * 9 * 128 + 128)
        + (pooled * 2048 + 2048)
        + (2048 * 2048 + 2048)
        + (2048 * 5 + 5)
    )
    assert variant_parameters("full") == full == 14_581_317
    bare = conv1 + conv2 + (128 * 9 * 128 + 128) + (pooled * 5 + 5)
    assert variant_parameters("no-layers3-4-6-7") == bare == 331_461
    wide_top = (pooled * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 5 + 5)
    narrow_top = (pooled * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 5 + 5)
    assert variant_parameters("wider-layers6-7") == full - narrow_top + wide_top


def error_rows(seeds):
    """Rows as the study gives them to `plot_errors`, with made-up errors."""
    errors = {"train_error": 0.1, "train_error_sd": 0.01, "val_error": 0.3, "val_error_sd": 0.02}
    return [{"variant": name, "parameters": 2e6, "seeds": seeds, **errors} for name in ("base", "no_layer6_7")]


@pytest.mark.parametrize("seeds, spread", [(3, "mean ± 1 std over 3 seeds"), (1, None)])
def test_the_chart_explains_its_bars_and_lines(tmp_path, monkeypatch, seeds, spread):
    texts = record_figure_texts(monkeypatch)
    ablation.plot(error_rows(seeds), 5, str(tmp_path / "ablation.png"), "Ablation")
    assert {"error on training photos", "error on validation photos", "guessing at random"} <= set(texts), texts
    assert "top-1 error after the last epoch (share of photos wrong)" in texts
    assert "variant (parameters, millions)" in texts and "base (2.0 M)" in texts
    # The legend says what the error bars are, when there are any.
    assert (spread in texts) if spread else not any("std" in text for text in texts), texts
    assert any(text.startswith("What to look for:") for text in texts), texts
