"""Photos kept as JPEG bytes in one file with an index: the compact cache for
sets too large for zfnet.data's raw cache (FFCV's idea, in numpy, Pillow and torchvision).

Each photo is decoded once, stretched to the cache's square as the raw cache stretches it and
encoded at JPEG quality 90: about a tenth of the raw cache's 196 KB a photo at 256 pixels.
The decoder works at the smallest scale that keeps the square's pixels (PIL's `draft`), so
a large photo decodes several times faster than whole. Training decodes each batch's bytes
again: with Pillow in the training process on the CPU (about a millisecond a photo here,
against some 40 ms of training), with torchvision's nvJPEG path a whole batch at once on a GPU.

The bytes are read photo by photo (pread), so a run's memory holds the index (24 bytes a
photo) but not the photos it has read. The files in the cache folder, named by side, square
and a digest of the photos' keys (path, size, modification time):
- NAME.jpegs: the photos' JPEG bytes one after the other;
- NAME.index.npz: where each photo's bytes start, its full size and its key; written last,
  so it marks the cache complete.
While it is built, every SHARD_PHOTOS photos become a shard file (NAME.shard-NNNNN.npz),
each written atomically: an interrupted build keeps the shards it finished and the next build
starts from them. A photo whose key is in an earlier cache of the same side is copied from
there, not decoded again, so a changed split encodes only its new photos.
"""

import hashlib
import io
import multiprocessing
import os
import weakref
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from zfnet.errors import UserError
from zfnet.files import atomic_write, remove_debris
from zfnet.images import open_rgb_reduced, resize_uint8

QUALITY = 90  # the quality FFCV and litdata quote their ImageNet sizes at
SHARD_PHOTOS = 256


def photo_keys(paths):
    """A 64-bit key per photo file from its absolute path, size and modification time: a key
    changes when the file does."""
    keys = np.empty(len(paths), dtype=np.uint64)
    for index, path in enumerate(paths):
        stat = os.stat(path)
        text = f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"
        keys[index] = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return keys


def encode_photo(path, side):
    """`(JPEG bytes of the photo stretched to side x side, (full height, full width))`."""
    image, full_size = open_rgb_reduced(path, side)
    buffer = io.BytesIO()
    Image.fromarray(resize_uint8(image, side).permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=QUALITY)
    return buffer.getvalue(), full_size


class _ShardEncoder:
    """Picklable worker: one shard's photos as `(data, lengths, sizes)` arrays, each photo
    copied from the earlier cache where its `(start, end)` there is given (start >= 0), else
    encoded; or `(None, error)` for a photo that cannot be decoded."""

    def __init__(self, side, earlier_data):
        self.side, self.earlier_data = side, earlier_data

    def __call__(self, job):
        paths, starts, ends, earlier_sizes = job
        earlier = np.memmap(self.earlier_data, dtype=np.uint8, mode="r") if self.earlier_data else None
        chunks, sizes = [], []
        for path, start, end, size in zip(paths, starts, ends, earlier_sizes):
            if start >= 0:
                chunks.append(earlier[start:end].tobytes())
                sizes.append(tuple(size))
                continue
            try:
                encoded, full_size = encode_photo(path, self.side)
            except UserError as error:
                return None, str(error)
            chunks.append(encoded)
            sizes.append(full_size)
        lengths = np.array([len(chunk) for chunk in chunks], dtype=np.int64)
        data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        return (data, lengths, np.array(sizes, dtype=np.int64).reshape(-1, 2)), None


class JpegCache:
    """JPEG-encoded photos of one side of the split, with the raw cache's interface: `take`
    decodes rows into uint8 pixels (N, 3, S, S), `labels` (N,), `sizes` (N, 2) the photos'
    original (height, width)."""

    def __init__(self, data, offsets, labels, sizes, device="cpu"):
        """`data`: the JPEG bytes in memory (a uint8 array), or the path of the file that
        holds them, read photo by photo with pread rather than mapped: pages read stay in
        the system's file cache, not in this process, so its memory does not grow with the
        photos it has seen."""
        self.data, self.offsets, self.labels, self.sizes = data, offsets, labels, sizes
        self.device = torch.device(device)
        self.file = os.open(data, os.O_RDONLY) if isinstance(data, str) else None
        if self.file is not None:
            weakref.finalize(self, os.close, self.file)

    def __len__(self):
        return len(self.labels)

    def to(self, device):
        """The cache decoding onto `device`: on a GPU the bytes stay in the host's file cache
        and each batch is decoded there; the original sizes stay on the CPU, where the crop
        boxes are drawn."""
        return JpegCache(self.data, self.offsets, self.labels.to(device), self.sizes, device)

    def encoded(self, row):
        """The JPEG bytes of cache row `row`."""
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        if self.file is None:
            return self.data[start:end].tobytes()
        return os.pread(self.file, end - start, start)

    def take(self, indices):
        """uint8 pixels (len(indices), 3, S, S) of cache rows `indices` (a CPU index tensor):
        decoded by Pillow on the CPU, or by torchvision's nvJPEG path in one batch on a GPU."""
        rows = indices.tolist()
        if self.device.type == "cuda":
            # torchvision marks its decoders deprecated for TorchCodec, which is not installed here.
            from torchvision.io import ImageReadMode, decode_jpeg

            encoded = [torch.frombuffer(bytearray(self.encoded(row)), dtype=torch.uint8) for row in rows]
            return torch.stack(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device))
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(self.encoded(row))).convert("RGB")) for row in rows])
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()

    @classmethod
    def load_or_build(cls, samples, side, square, cache_dir, workers=0, quiet=False):
        """Open the JPEG cache in `cache_dir` that matches these files (of the side named
        `side`, stretched to `square` pixels), else build it there, resuming an interrupted
        build and reusing an earlier cache's photos; in memory if `cache_dir` is None or
        cannot be written."""
        paths = [path for path, _ in samples]
        labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        keys = photo_keys(paths)
        digest = hashlib.sha256(f"{side}:{square}:{QUALITY}".encode() + keys.tobytes()).hexdigest()[:16]
        name = f"{side}-jpeg{square}-{digest}"
        store = cache_dir is not None
        if store:
            data_file, index_file = (os.path.join(cache_dir, name + suffix) for suffix in (".jpegs", ".index.npz"))
            if os.path.exists(data_file) and os.path.exists(index_file):
                return cls.open(data_file, index_file, labels)
            if os.path.isdir(cache_dir):
                remove_debris(cache_dir)
        earlier = _earlier_cache(cache_dir, side, square, name) if store else None
        starts, ends, earlier_sizes = _reusable(keys, earlier)

        jobs, shard_files = {}, []
        for number, first in enumerate(range(0, len(paths), SHARD_PHOTOS)):
            shard_file = os.path.join(cache_dir, f"{name}.shard-{number:05d}.npz") if store else None
            shard_files.append(shard_file)
            if store and os.path.exists(shard_file):
                continue
            rows = slice(first, first + SHARD_PHOTOS)
            jobs[number] = (paths[rows], starts[rows], ends[rows], earlier_sizes[rows])
        encoder = _ShardEncoder(square, earlier[0] if earlier else None)
        bar = tqdm(
            total=sum(len(job[0]) for job in jobs.values()),
            desc=f"encoding {side} photos into the JPEG cache",
            unit="photo",
            disable=quiet,
            leave=False,
        )
        in_memory = {}
        with bar, _mapper(workers) as mapped:
            for number, (shard, error) in zip(jobs, mapped(encoder, jobs.values())):
                if error:
                    raise UserError(f"{error} (remove it or re-run split_data.py)")
                if store:
                    try:
                        _write_shard(shard_files[number], shard)
                    except UserError as problem:
                        store = _unstored(cache_dir, problem, quiet)
                if not store:
                    in_memory[number] = shard
                bar.update(len(shard[1]))
        if store:
            try:
                _assemble(shard_files, data_file, index_file, keys)
                _drop_other_caches(cache_dir, side, square, name)
                return cls.open(data_file, index_file, labels)
            except UserError as problem:
                _unstored(cache_dir, problem, quiet)
        # Shards written before the disk filled are read back; the files stay for a later build.
        parts = [in_memory[n] if n in in_memory else _read_shard(file) for n, file in enumerate(shard_files)]
        data = np.concatenate([part[0] for part in parts])
        offsets = np.concatenate([[0], np.cumsum(np.concatenate([part[1] for part in parts]))])
        return cls(data, offsets, labels, torch.from_numpy(np.concatenate([part[2] for part in parts])))

    @classmethod
    def open(cls, data_file, index_file, labels):
        with np.load(index_file) as index:
            offsets, sizes = index["offsets"], index["sizes"]
        return cls(data_file, offsets, labels, torch.from_numpy(sizes))


@contextmanager
def _mapper(workers):
    """A `map(function, jobs)` that yields each job's result in order: from `workers` spawned
    processes, or in this one for 0 or 1."""
    if workers <= 1:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield pool.imap


def _unstored(cache_dir, problem, quiet):
    """Say that the cache stays in memory because `cache_dir` cannot take it; returns False
    (nothing more is stored)."""
    if not quiet:
        print(f"note: the JPEG cache cannot be written in {cache_dir} ({problem}); keeping it in memory for this run")
    return False


def _write_shard(path, shard):
    data, lengths, sizes = shard
    atomic_write(path, lambda file: np.savez(file, data=data, lengths=lengths, sizes=sizes))


def _read_shard(path):
    with np.load(path) as shard:
        return shard["data"], shard["lengths"], shard["sizes"]


def _assemble(shard_files, data_file, index_file, keys):
    """Concatenate the shards into the cache's data file, then write its index (the mark of
    a complete cache) and delete the shards."""
    lengths, sizes = [], []

    def write_data(file):
        for shard_file in shard_files:
            data, shard_lengths, shard_sizes = _read_shard(shard_file)
            file.write(data.tobytes())
            lengths.append(shard_lengths)
            sizes.append(shard_sizes)

    atomic_write(data_file, write_data)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    atomic_write(index_file, lambda file: np.savez(file, offsets=offsets, sizes=np.concatenate(sizes), keys=keys))
    for shard_file in shard_files:
        os.unlink(shard_file)


def _cache_names(cache_dir, side, square):
    prefix = f"{side}-jpeg{square}-"
    if not os.path.isdir(cache_dir):
        return []
    return sorted({entry.name.split(".")[0] for entry in os.scandir(cache_dir) if entry.name.startswith(prefix)})


def _earlier_cache(cache_dir, side, square, name):
    """`(data file, offsets, sizes, keys)` of the newest complete JPEG cache of this side and
    square other than `name`, or None."""
    found = []
    for other in _cache_names(cache_dir, side, square):
        data_file, index_file = (os.path.join(cache_dir, other + suffix) for suffix in (".jpegs", ".index.npz"))
        if other != name and os.path.exists(data_file) and os.path.exists(index_file):
            found.append((os.path.getmtime(index_file), data_file, index_file))
    if not found:
        return None
    _, data_file, index_file = max(found)
    with np.load(index_file) as index:
        return data_file, index["offsets"], index["sizes"], index["keys"]


def _reusable(keys, earlier):
    """Per photo `(start, end)` of its bytes in the earlier cache and its size there, start -1
    where the earlier cache does not hold it."""
    starts = np.full(len(keys), -1, dtype=np.int64)
    ends = np.full(len(keys), -1, dtype=np.int64)
    sizes = np.zeros((len(keys), 2), dtype=np.int64)
    if earlier is None:
        return starts, ends, sizes
    _, offsets, earlier_sizes, earlier_keys = earlier
    order = np.argsort(earlier_keys, kind="stable")
    position = np.searchsorted(earlier_keys[order], keys).clip(max=len(order) - 1)
    found = earlier_keys[order][position] == keys
    rows = order[position[found]]
    starts[found], ends[found], sizes[found] = offsets[rows], offsets[rows + 1], earlier_sizes[rows]
    return starts, ends, sizes


def _drop_other_caches(cache_dir, side, square, name):
    """Delete this side's other JPEG caches and shards: a split has one cache per side."""
    for other in _cache_names(cache_dir, side, square):
        if other != name:
            for entry in os.scandir(cache_dir):
                if entry.name.split(".")[0] == other:
                    os.unlink(entry.path)
