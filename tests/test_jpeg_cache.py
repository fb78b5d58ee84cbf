import os

import numpy as np
import pytest
import torch

import zfnet.jpeg_cache as jpeg_cache
from tests.helpers import PREPROCESS, disk_full, write_photo
from zfnet.data import CACHE_SIDE, PhotoCache, choose_cache, scan_split, train_inputs, val_inputs
from zfnet.errors import UserError
from zfnet.files import PARTIAL_PREFIX
from zfnet.jpeg_cache import JpegCache


@pytest.fixture
def blob_split(tmp_path):
    """A split of smooth photos of several sizes (JPEG keeps smooth pictures close; the
    colour split's noise is what JPEG throws away), 20 train and 6 val photos."""
    root = tmp_path / "data"
    for label in range(2):
        for index in range(10):
            size = (200 + 37 * index, 150 + 23 * index)
            write_photo(root / "train" / f"class{label}" / f"{index:03d}.jpg", seed=10 * label + index, size=size)
        for index in range(3):
            write_photo(root / "val" / f"class{label}" / f"{index:03d}.jpg", seed=100 + 10 * label + index)
    return root


def build(samples, cache_dir, side="train", workers=0):
    square = CACHE_SIDE if side == "train" else PREPROCESS["input_size"]
    return JpegCache.load_or_build(samples[side], side, square, cache_dir, workers, quiet=True)


def count_encodings(monkeypatch):
    encoded = []
    encode = jpeg_cache.encode_photo

    def counting(path, side):
        encoded.append(path)
        return encode(path, side)

    monkeypatch.setattr(jpeg_cache, "encode_photo", counting)
    return encoded


def test_decoded_photos_are_the_raw_caches_within_jpeg_tolerance(blob_split):
    _, samples = scan_split(blob_split)
    for side in ("train", "val"):
        raw = PhotoCache.load_or_build(samples[side], side, 224, None, quiet=True)
        cache = build(samples, None, side)
        rows = torch.arange(len(cache))
        pixels = cache.take(rows)
        assert pixels.dtype == torch.uint8 and pixels.shape == raw.pixels.shape
        difference = (pixels.float() - torch.from_numpy(raw.pixels).float()).abs()
        assert difference.mean() < 4 and difference.max() <= 64, (side, difference.mean(), difference.max())
        assert torch.equal(cache.labels, raw.labels)
        if side == "train":
            assert torch.equal(cache.sizes, raw.sizes)  # the crops are drawn in the same original pixels


def test_the_same_seed_cuts_the_same_crops_as_the_raw_cache(blob_split):
    _, samples = scan_split(blob_split)
    raw = PhotoCache.load_or_build(samples["train"], "train", 224, None, quiet=True)
    cache = build(samples, None)
    rows = torch.tensor([3, 0, 17, 9])
    ours = train_inputs(cache, rows, torch.Generator().manual_seed(5), PREPROCESS, jitter=0.2)
    again = train_inputs(cache, rows, torch.Generator().manual_seed(5), PREPROCESS, jitter=0.2)
    theirs = train_inputs(raw, rows, torch.Generator().manual_seed(5), PREPROCESS, jitter=0.2)
    assert torch.equal(ours, again)
    # Same boxes, flips and jitter: only the JPEG loss tells them apart (inputs span [-1, 1]).
    assert (ours - theirs).abs().mean() < 0.03
    other = train_inputs(cache, rows, torch.Generator().manual_seed(6), PREPROCESS, jitter=0.2)
    assert (ours - other).abs().mean() > 0.1
    assert val_inputs(build(samples, None, "val"), torch.tensor([1]), PREPROCESS).shape == (1, 3, 224, 224)


def test_the_cache_is_two_files_reopened_and_read_photo_by_photo_and_far_smaller_than_raw(blob_split):
    _, samples = scan_split(blob_split)
    cache_dir = blob_split / ".cache"
    built = build(samples, cache_dir)
    files = sorted(os.listdir(cache_dir))
    assert len(files) == 2 and files[0].endswith(".index.npz") and files[1].endswith(".jpegs")
    reopened = build(samples, cache_dir)
    assert reopened.file is not None  # read from the file, not held in memory
    assert torch.equal(reopened.take(torch.arange(20)), built.take(torch.arange(20)))
    per_photo = os.path.getsize(cache_dir / files[1]) / len(built)
    assert per_photo < 3 * CACHE_SIDE**2 / 5, per_photo


def test_an_interrupted_build_resumes_from_its_shards_and_equals_an_uninterrupted_one(
    blob_split, tmp_path, monkeypatch
):
    _, samples = scan_split(blob_split)
    monkeypatch.setattr(jpeg_cache, "SHARD_PHOTOS", 6)  # 20 photos: shards of 6, 6, 6, 2
    whole = tmp_path / "whole"
    build(samples, whole)

    cache_dir = blob_split / ".cache"
    write_shard = jpeg_cache._write_shard
    written = []

    def killed_on_the_third(path, shard):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        write_shard(path, shard)

    monkeypatch.setattr(jpeg_cache, "_write_shard", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        build(samples, cache_dir)
    left = sorted(os.listdir(cache_dir))
    assert len(left) == 2 and all(".shard-" in name for name in left)  # no half-written file

    monkeypatch.setattr(jpeg_cache, "_write_shard", write_shard)
    encoded = count_encodings(monkeypatch)
    resumed = build(samples, cache_dir)
    assert len(encoded) == 20 - 12
    for suffix in (".jpegs", ".index.npz"):
        (ours,) = [name for name in os.listdir(cache_dir) if name.endswith(suffix)]
        (theirs,) = [name for name in os.listdir(whole) if name.endswith(suffix)]
        assert ours == theirs and (cache_dir / ours).read_bytes() == (whole / theirs).read_bytes()
    assert len(os.listdir(cache_dir)) == 2 and len(resumed) == 20


def test_a_changed_split_encodes_only_its_new_photos(blob_split, monkeypatch):
    _, samples = scan_split(blob_split)
    cache_dir = blob_split / ".cache"
    before = build(samples, cache_dir)
    earlier_paths = [path for path, _ in samples["train"]]
    write_photo(blob_split / "train" / "class0" / "new.jpg", seed=99, size=(300, 200))
    os.unlink(blob_split / "train" / "class1" / "004.jpg")
    _, samples = scan_split(blob_split)
    encoded = count_encodings(monkeypatch)
    after = build(samples, cache_dir)
    assert [os.path.basename(path) for path in encoded] == ["new.jpg"]
    assert len(os.listdir(cache_dir)) == 2  # the earlier cache is gone
    paths = [path for path, _ in samples["train"]]
    kept = torch.tensor([row for row, path in enumerate(paths) if path in earlier_paths])
    earlier_rows = torch.tensor([earlier_paths.index(paths[row]) for row in kept])
    assert len(kept) == 19
    assert torch.equal(after.take(kept), before.take(earlier_rows))
    assert torch.equal(after.sizes[kept], before.sizes[earlier_rows])
    assert tuple(after.sizes[paths.index(str(blob_split / "train" / "class0" / "new.jpg"))].tolist()) == (200, 300)


def test_worker_processes_build_the_same_cache(blob_split):
    _, samples = scan_split(blob_split)
    serial, pooled = build(samples, None, workers=0), build(samples, None, workers=2)
    assert np.array_equal(serial.data, pooled.data) and torch.equal(serial.sizes, pooled.sizes)


def test_an_unreadable_photo_is_named_and_leaves_no_half_written_file(blob_split, monkeypatch):
    (blob_split / "train" / "class1" / "002.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")  # row 12
    _, samples = scan_split(blob_split)
    monkeypatch.setattr(jpeg_cache, "SHARD_PHOTOS", 6)
    cache_dir = blob_split / ".cache"
    with pytest.raises(UserError, match="002.jpg: .*(not an image|truncated or corrupt).*re-run split_data.py"):
        build(samples, cache_dir)
    # The two shards before it stay for the build after the photo is fixed; nothing else.
    assert sorted(name.split(".")[-2] for name in os.listdir(cache_dir)) == ["shard-00000", "shard-00001"]


def test_a_full_disk_keeps_the_cache_in_memory_and_says_so(blob_split, monkeypatch, capsys):
    _, samples = scan_split(blob_split)
    expected = build(samples, None)
    monkeypatch.setattr(np, "savez", disk_full)
    cache_dir = blob_split / ".cache"
    cache = JpegCache.load_or_build(samples["train"], "train", CACHE_SIDE, cache_dir)
    assert "note: the JPEG cache cannot be written" in capsys.readouterr().out
    assert np.array_equal(cache.data, expected.data) and torch.equal(cache.sizes, expected.sizes)
    assert not [name for name in os.listdir(cache_dir) if name.startswith(PARTIAL_PREFIX)]


def test_raw_and_jpeg_caches_of_a_split_live_side_by_side(blob_split):
    _, samples = scan_split(blob_split)
    cache_dir = blob_split / ".cache"
    build(samples, cache_dir)
    PhotoCache.load_or_build(samples["train"], "train", 224, cache_dir, quiet=True)
    names = os.listdir(cache_dir)
    assert len(names) == 4 and sum(name.endswith(".jpegs") for name in names) == 1


def test_auto_chooses_raw_while_it_fits_and_jpeg_when_it_does_not(blob_split, monkeypatch):
    _, samples = scan_split(blob_split)
    kind, why = choose_cache("auto", samples, 224, blob_split / ".cache")
    assert kind == "raw" and "fits in 50% of the memory" in why
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 100}  # a 400 KB memory: 26 photos do not fit
    monkeypatch.setattr(os, "sysconf", pages.__getitem__)
    kind, why = choose_cache("auto", samples, 224, blob_split / ".cache")
    assert kind == "jpeg" and "raw cache's 5 MB does not fit in 50% of the memory (0 MB)" in why
    assert choose_cache("raw", samples, 224, None) == ("raw", "--cache raw")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_decodes_batches_like_the_cpu(blob_split):
    _, samples = scan_split(blob_split)
    cache = build(samples, None)
    rows = torch.arange(8)
    on_gpu = cache.to("cuda").take(rows)
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu().float() - cache.take(rows).float()).abs().mean() < 1.0
