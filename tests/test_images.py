import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from tests.helpers import PREPROCESS, write_bomb
from zfnet.errors import UserError
from zfnet.images import find_images, load_input, normalize, open_rgb, open_rgb_reduced, resize_uint8, unnormalize


def torchvision_path(path):
    """The blog tutorial's validation transform: the reference our one image path must equal."""
    transform = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    )
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
    cases = {
        "missing.jpg": "no such file",
        "notes.jpg": "not an image",
        "empty.jpg": "not an image",
        "cut.jpg": "truncated or corrupt",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as caught:
            open_rgb(tmp_path / name)
        assert name in str(caught.value)
    with pytest.raises(UserError, match="folder"):
        open_rgb(tmp_path)


def test_find_images_lists_photos_in_sub_folders_sorted(tmp_path, photos):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "b" / "deep" / "z.JPG").write_bytes(photos["RGB"].read_bytes())
    (tmp_path / "notes.txt").write_text("not listed")
    found = find_images(tmp_path)
    assert found == sorted(found) and str(tmp_path / "b" / "deep" / "z.JPG") in found
    assert not any(path.endswith(".txt") for path in found)
    with pytest.raises(UserError, match="image folder not found"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no photos in"):
        find_images(tmp_path / "empty")


def test_a_decompression_bomb_is_refused_by_name_before_decoding(tmp_path):
    for side in (30000, 11000):  # above PIL's error limit, and between its warning and error limits
        path = write_bomb(tmp_path / f"bomb{side}.png", side)
        with pytest.raises(UserError, match=f"bomb{side}.png: image too large to decode safely"):
            open_rgb(path)


def test_links_to_nowhere_are_listed_without_a_crash_and_explained_when_opened(tmp_path, photos):
    (tmp_path / "sub").mkdir()
    os.symlink("loop.jpg", tmp_path / "sub" / "loop.jpg")  # a link to itself
    os.symlink("gone.jpg", tmp_path / "sub" / "dangling.jpg")  # to a file that is gone
    os.symlink("..", tmp_path / "sub" / "up")  # a folder loop: never followed, so the search ends
    found = find_images(tmp_path)
    assert str(tmp_path / "sub" / "loop.jpg") in found and str(tmp_path / "sub" / "dangling.jpg") in found
    assert len(found) == len(photos) + 2
    with pytest.raises(UserError, match="loop.jpg: a symbolic link that loops back and never reaches a file"):
        open_rgb(tmp_path / "sub" / "loop.jpg")
    with pytest.raises(UserError, match="dangling.jpg: no such file"):
        open_rgb(tmp_path / "sub" / "dangling.jpg")


def test_a_link_to_a_photo_is_a_photo(tmp_path, photos):
    os.symlink(photos["RGB"], tmp_path / "linked.jpg")
    assert torch.equal(load_input(tmp_path / "linked.jpg", PREPROCESS), load_input(photos["RGB"], PREPROCESS))


def test_a_pipe_named_like_a_photo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)  # opening it would wait for a writer that never comes
    with pytest.raises(UserError, match=r"fifo.jpg: not a regular file \(a pipe, socket or device\)"):
        open_rgb(fifo)


def test_a_reduced_decode_keeps_the_full_upright_size(tmp_path):
    path = tmp_path / "turned.jpg"
    image = Image.new("RGB", (1200, 700), (200, 100, 50))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter: shown 700 wide, 1200 high
    image.save(path, exif=exif)
    reduced, size = open_rgb_reduced(path, 256)
    assert size == (1200, 700)
    assert reduced.size == (350, 600)  # decoded at half scale: at least 256 each way, turned upright
