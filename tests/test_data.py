import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from tests.helpers import (
    ON_CPU,
    PREPROCESS,
    assert_one_line_error,
    call_script,
    disk_full,
    hide_progress_bars,
    write_bomb,
)
from zfnet.data import (
    CACHE_SIDE,
    PhotoCache,
    TutorialPhotos,
    colour_jitter,
    crop_resize_flip,
    random_resized_crop_boxes,
    read_class_names,
    scan_split,
    train_inputs,
    val_inputs,
)
from zfnet.errors import UserError
from zfnet.files import PARTIAL_PREFIX
from zfnet.images import load_input


def test_scan_split_lists_classes_and_labels(colour_split):
    classes, samples = scan_split(colour_split)
    assert classes == ["blue", "green", "red"]
    assert len(samples["train"]) == 36 and len(samples["val"]) == 12
    for path, label in samples["val"]:
        assert os.path.basename(os.path.dirname(path)) == classes[label]


def test_scan_split_rejects_unusable_layouts(colour_split, tmp_path):
    with pytest.raises(UserError, match="not found"):
        scan_split(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no train/"):
        scan_split(tmp_path)
    (colour_split / "val" / "purple").mkdir()
    with pytest.raises(UserError, match="no photos in class folder.*purple"):
        scan_split(colour_split)
    (colour_split / "val" / "purple" / "a.jpg").write_bytes((colour_split / "val" / "red" / "000.jpg").read_bytes())
    with pytest.raises(UserError, match="different classes.*only in val: \\['purple'\\]"):
        scan_split(colour_split)


def test_validation_inputs_are_bit_identical_to_the_one_image_path(colour_split):
    _, samples = scan_split(colour_split)
    cache = PhotoCache.load_or_build(samples["val"], "val", 224, None, quiet=True)
    rows = torch.tensor([0, 5, 11])
    expected = torch.stack([load_input(samples["val"][i][0], PREPROCESS) for i in rows])
    assert torch.equal(val_inputs(cache, rows, PREPROCESS), expected)


def test_the_cache_is_written_once_reused_and_rebuilt_when_the_split_changes(colour_split):
    _, samples = scan_split(colour_split)
    cache_dir = colour_split / ".cache"
    built = PhotoCache.load_or_build(samples["train"], "train", 224, cache_dir, quiet=True)
    files = sorted(os.listdir(cache_dir))
    assert len(files) == 2 and built.pixels.shape == (36, 3, CACHE_SIDE, CACHE_SIDE)
    reopened = PhotoCache.load_or_build(samples["train"], "train", 224, cache_dir, quiet=True)
    assert isinstance(reopened.pixels, np.memmap)
    assert np.array_equal(reopened.pixels, built.pixels) and torch.equal(reopened.sizes, built.sizes)
    assert sorted(os.listdir(cache_dir)) == files

    changed = samples["train"][0][0]
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    PhotoCache.load_or_build(samples["train"], "train", 224, cache_dir, quiet=True)
    after = sorted(os.listdir(cache_dir))
    assert len(after) == 2 and after != files  # the stale cache is gone


def test_decoding_in_worker_processes_gives_the_same_cache(colour_split):
    _, samples = scan_split(colour_split)
    serial = PhotoCache.load_or_build(samples["val"], "val", 224, None, workers=0, quiet=True)
    pooled = PhotoCache.load_or_build(samples["val"], "val", 224, None, workers=2, quiet=True)
    assert np.array_equal(serial.pixels, pooled.pixels)


def test_a_bad_photo_in_the_split_is_a_user_error(colour_split):
    (colour_split / "train" / "red" / "000.jpg").write_text("oops")
    _, samples = scan_split(colour_split)
    with pytest.raises(UserError, match="000.jpg: not an image"):
        PhotoCache.load_or_build(samples["train"], "train", 224, None, quiet=True)


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov distance between the empirical distributions."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return np.abs(cdf_a - cdf_b).max()


@pytest.mark.parametrize("height, width", [(240, 320), (500, 375), (60, 400)])
def test_crop_boxes_follow_torchvisions_random_resized_crop(height, width):
    draws = 20000
    ours = random_resized_crop_boxes(torch.tensor([[height, width]] * draws), torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    theirs = torch.tensor(
        [transforms.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(draws)],
        dtype=torch.float64,
    )
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()

    def describe(boxes):
        top, left, h, w = boxes.T.numpy()
        return {
            "scale": h * w / (height * width),
            "log_aspect": np.log(w / h),
            "centre_y": (top + h / 2) / height,
            "centre_x": (left + w / 2) / width,
        }

    # 20000 draws each: 0.02 is beyond the 0.1% critical value of the KS distance (about 0.0195)
    for name, (a, b) in {k: (describe(ours)[k], describe(theirs)[k]) for k in describe(ours)}.items():
        assert ks_statistic(a, b) < 0.02, name
    scale = describe(ours)["scale"]
    assert scale.min() >= 0.08 * 0.9 and scale.max() <= 1.0


def bilinear_reference(image, top, left, h, w, out):
    """Sample an (C, S, S) image at the centres of an out x out grid over a box given in a
    (height, width) = image's own pixel frame, one pixel at a time (border clamped)."""
    channels, rows, cols = image.shape
    result = np.zeros((channels, out, out))
    for i in range(out):
        for j in range(out):
            y = top + (i + 0.5) * h / out - 0.5
            x = left + (j + 0.5) * w / out - 0.5
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            fy, fx = y - y0, x - x0
            for dy, wy in ((0, 1 - fy), (1, fy)):
                for dx, wx in ((0, 1 - fx), (1, fx)):
                    yy, xx = min(max(y0 + dy, 0), rows - 1), min(max(x0 + dx, 0), cols - 1)
                    result[:, i, j] += wy * wx * image[:, yy, xx]
    return result


def test_crop_resize_flip_samples_the_box_bilinearly():
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    # originals of 64 x 48 (height x width) stretched into the 32 x 32 cached squares
    sizes = torch.tensor([[64, 48], [64, 48]])
    boxes = torch.tensor([[8.0, 4.0, 40.0, 30.0], [0.0, 0.0, 64.0, 48.0]], dtype=torch.float64)
    flips = torch.tensor([False, True])
    out = crop_resize_flip(torch.from_numpy(square), sizes, boxes, flips, 8).numpy()
    for index in range(2):
        top, left, h, w = boxes[index].tolist()
        scale_y, scale_x = 32 / 64, 32 / 48
        expected = bilinear_reference(
            square[index].astype(np.float64), top * scale_y, left * scale_x, h * scale_y, w * scale_x, 8
        )
        if flips[index]:
            expected = expected[:, :, ::-1]
        assert np.allclose(out[index], expected, atol=1e-3)


def test_training_inputs_are_normalised_crops_with_half_of_them_flipped(colour_split):
    _, samples = scan_split(colour_split)
    cache = PhotoCache.load_or_build(samples["train"], "train", 224, None, quiet=True)
    rows = torch.arange(len(cache))
    inputs = train_inputs(cache, rows, torch.Generator().manual_seed(0), PREPROCESS)
    assert inputs.shape == (36, 3, 224, 224) and inputs.dtype == torch.float32
    assert inputs.min() >= -1 and inputs.max() <= 1
    again = train_inputs(cache, rows, torch.Generator().manual_seed(0), PREPROCESS)
    assert torch.equal(inputs, again)  # the generator alone decides the crops
    flips = torch.rand(100000, generator=torch.Generator().manual_seed(1)) < 0.5
    assert abs(flips.float().mean().item() - 0.5) < 0.01
    # a full-image crop of a flat colour photo keeps its colour
    red = cache.labels == 2
    assert inputs[red][:, 0].mean() > inputs[red][:, 2].mean()


def test_crop_then_resize_matches_interpolate_for_the_whole_image():
    square = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    full = torch.tensor([[0.0, 0.0, 500.0, 375.0]], dtype=torch.float64)
    out = crop_resize_flip(square, torch.tensor([[500, 375]]), full, torch.tensor([False]), 224)
    expected = F.interpolate(square.float(), size=224, mode="bilinear", align_corners=False)
    assert torch.allclose(out, expected, atol=0.01)  # float32 grid coordinates: 0.01 of 255 levels


def links_to_nowhere(folder):
    """A link to itself and one to a file that is gone, named like photos, in `folder`."""
    os.symlink("loop.jpg", folder / "loop.jpg")
    os.symlink("gone.jpg", folder / "dangling.jpg")
    return [str(folder / "loop.jpg"), str(folder / "dangling.jpg")]


def test_links_to_nowhere_are_passed_over_with_a_note_and_links_to_photos_kept(colour_split, capsys):
    _, expected = scan_split(colour_split)
    broken = links_to_nowhere(colour_split / "train" / "red") + links_to_nowhere(colour_split / "val" / "blue")
    os.symlink("loop", colour_split / "train" / "loop")  # a class folder that is a link to itself
    os.symlink("loop", colour_split / "val" / "loop")
    os.symlink(colour_split / "val" / "red" / "000.jpg", colour_split / "train" / "red" / "linked.jpg")
    capsys.readouterr()

    classes, samples = scan_split(colour_split)

    assert classes == ["blue", "green", "red"]
    assert samples["val"] == expected["val"]
    assert samples["train"] == sorted(expected["train"] + [(str(colour_split / "train" / "red" / "linked.jpg"), 2)])
    notes = capsys.readouterr().err.splitlines()
    assert sorted(notes) == sorted(f"note: skipped {path}: a symbolic link that leads to no file" for path in broken)
    cache = PhotoCache.load_or_build(samples["train"], "train", 224, colour_split / ".cache", quiet=True)
    assert len(cache) == 37  # the fingerprint stats every photo: none of the broken links


def test_train_py_trains_past_links_to_nowhere_in_its_class_folders(colour_split, tmp_path):
    broken = links_to_nowhere(colour_split / "train" / "green") + links_to_nowhere(colour_split / "val" / "red")
    result = call_script(
        "train.py",
        "--data",
        colour_split,
        "--out",
        tmp_path / "run",
        "--epochs",
        "1",
        "--batch-size",
        "12",
        "--fc-features",
        "32,32",
        *ON_CPU,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "36 train / 12 val photos" in result.stdout
    assert all(f"note: skipped {path}: a symbolic link that leads to no file" in result.stderr for path in broken)
    assert os.path.exists(tmp_path / "run" / "best.pth")


def test_a_photo_too_large_to_decode_in_the_split_is_a_user_error_naming_it(colour_split, tmp_path, monkeypatch):
    hide_progress_bars(monkeypatch)
    bomb = write_bomb(colour_split / "val" / "green" / "huge.png")
    _, samples = scan_split(colour_split)
    with pytest.raises(UserError, match="huge.png: image too large to decode safely .*re-run split_data.py"):
        PhotoCache.load_or_build(samples["val"], "val", 224, None, quiet=True)
    result = call_script("train.py", "--data", colour_split, "--out", tmp_path / "run", "--epochs", "1", *ON_CPU)
    assert_one_line_error(result, f"{bomb}: image too large to decode safely")
    assert not os.path.exists(tmp_path / "run" / "last.pth")


def test_building_a_cache_clears_what_killed_builds_left(colour_split):
    _, samples = scan_split(colour_split)
    cache_dir = colour_split / ".cache"
    cache_dir.mkdir()
    debris = [cache_dir / f"{PARTIAL_PREFIX}abc", cache_dir / f"{PARTIAL_PREFIX}def"]
    for path in debris:
        path.write_bytes(b"half a cache")
    (cache_dir / "notes.txt").write_text("not the cache's")
    PhotoCache.load_or_build(samples["val"], "val", 224, cache_dir, quiet=True)
    assert not any(path.exists() for path in debris)
    assert (cache_dir / "notes.txt").read_text() == "not the cache's"
    assert len([name for name in os.listdir(cache_dir) if name.startswith("val-")]) == 2


@pytest.mark.parametrize("writer", ["numpy.save", "os.fsync"])
def test_a_cache_that_cannot_be_written_stays_in_memory_with_a_note(colour_split, monkeypatch, capsys, writer):
    _, samples = scan_split(colour_split)
    cache_dir = colour_split / ".cache"
    expected = PhotoCache.load_or_build(samples["val"], "val", 224, None, quiet=True)

    monkeypatch.setattr(writer, disk_full)
    cache = PhotoCache.load_or_build(samples["val"], "val", 224, cache_dir)
    assert np.array_equal(cache.pixels, expected.pixels)
    assert "No space left on device" in capsys.readouterr().out
    assert os.listdir(cache_dir) == []  # no half-written file


def test_tutorial_photos_serve_what_torchvisions_image_folder_serves(colour_split):
    ours = TutorialPhotos(colour_split / "val", transforms.ToTensor())
    theirs = datasets.ImageFolder(colour_split / "val", transform=transforms.ToTensor())
    assert ours.classes == theirs.classes and len(ours) == len(theirs) == 12
    assert ours.samples == theirs.samples
    for index in (0, 5, 11):
        (x, label), (y, their_label) = ours[index], theirs[index]
        assert torch.equal(x, y) and label == their_label


def test_tutorial_photos_pass_over_links_to_nowhere_and_name_a_bomb(colour_split):
    links_to_nowhere(colour_split / "train" / "red")
    photos = TutorialPhotos(colour_split / "train", transforms.ToTensor())
    assert len(photos) == 36
    bomb = write_bomb(colour_split / "train" / "blue" / "000-huge.png")
    photos = TutorialPhotos(colour_split / "train", transforms.ToTensor())
    with pytest.raises(UserError, match=f"{bomb}: image too large to decode safely"):
        photos[0]


def test_colour_jitter_matches_torchvisions_adjusters():
    from torchvision.transforms import functional as tf

    pixels = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    factors = 1 + 0.4 * (2 * torch.rand(3, 4, generator=torch.Generator().manual_seed(1)) - 1)
    expected = []
    for image, (brightness, contrast, saturation) in zip(pixels / 255, factors.T):
        image = tf.adjust_brightness(image, brightness.item())
        image = tf.adjust_contrast(image, contrast.item())
        expected.append(tf.adjust_saturation(image, saturation.item()) * 255)
    assert torch.allclose(colour_jitter(pixels, factors), torch.stack(expected), atol=0.02)


def test_class_names_come_from_json_or_synset_lines_and_must_name_every_folder(tmp_path):
    classes = ["n01440764", "n01443537"]
    lines = tmp_path / "LOC_synset_mapping.txt"
    lines.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn09999999 extra\n")
    assert read_class_names(lines, classes) == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    named = tmp_path / "names.json"
    named.write_text('{"n01443537": "goldfish", "n01440764": "tench"}')
    assert read_class_names(named, classes) == ["tench", "goldfish"]
    with pytest.raises(UserError, match="names no class for 1 of the 3 class folders: n02000000"):
        read_class_names(lines, [*classes, "n02000000"])
    with pytest.raises(UserError, match="cannot read the class names"):
        read_class_names(tmp_path / "nowhere.txt", classes)
    (tmp_path / "list.json").write_text('["tench", "goldfish"]')
    with pytest.raises(UserError, match="not a JSON object"):
        read_class_names(tmp_path / "list.json", classes)
