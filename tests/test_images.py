import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from zfnet.errors import UserError
from zfnet.images import load_input, normalize, open_rgb, resize_uint8, unnormalize

PREPROCESS = {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def torchvision_path(path):
    """The seed's validation transform: the reference our one image path must equal."""
    transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    return transform(Image.open(path).convert("RGB"))


@pytest.fixture
def photos(tmp_path):
    """One photo per mode a real data set holds, with odd sizes."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (173, 301, 3), dtype=np.uint8))
    paths = {}
    for mode, suffix in (("RGB", ".jpg"), ("L", ".jpg"), ("CMYK", ".jpg"), ("P", ".png"), ("RGBA", ".png")):
        path = tmp_path / f"{mode}{suffix}"
        image = rgb.convert(mode) if mode != "RGBA" else rgb.convert("RGBA")
        image.save(path)
        paths[mode] = path
    return paths


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "P", "RGBA"])
def test_load_input_is_bit_identical_to_torchvision(photos, mode):
    ours = load_input(photos[mode], PREPROCESS)
    assert ours.shape == (3, 224, 224) and ours.dtype == torch.float32
    assert torch.equal(ours, torchvision_path(photos[mode]))


def test_resize_then_normalize_equals_load_input(photos):
    pixels = resize_uint8(open_rgb(photos["RGB"]), 224)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    assert torch.equal(normalize(pixels, [0.5] * 3, [0.5] * 3), load_input(photos["RGB"], PREPROCESS))


def test_unnormalize_inverts_normalize(photos):
    pixels = resize_uint8(open_rgb(photos["RGB"]), 64)
    restored = unnormalize(normalize(pixels, [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]), [0.4, 0.5, 0.6], [0.2, 0.3, 0.25])
    assert torch.allclose(restored * 255, pixels.float(), atol=1e-3)


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), (255, 0, 0)).save(path, exif=exif)
    assert open_rgb(path).size == (20, 40)


def test_bad_files_raise_user_errors_naming_the_file(tmp_path, photos):
    (tmp_path / "notes.jpg").write_text("not a photo")
    (tmp_path / "empty.jpg").write_bytes(b"")
    data = photos["RGB"].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    cases = {"missing.jpg": "no such file", "notes.jpg": "not an image", "empty.jpg": "not an image",
             "cut.jpg": "truncated or corrupt"}
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as caught:
            open_rgb(tmp_path / name)
        assert name in str(caught.value)
    with pytest.raises(UserError, match="folder"):
        open_rgb(tmp_path)
