"""split_data.py on tiny photos made here, on the bundled sample, and downloading from a local
HTTP server on 127.0.0.1."""

import errno
import hashlib
import http.server
import io
import json
import os
import pathlib
import random
import re
import shutil
import socket
import tarfile
import tempfile
import threading

import pytest
from PIL import Image

from tests.helpers import ROOT, call_script, folder_contents, run_script, write_bomb
from zfnet import splitting

SAMPLE_FALLBACK = "; using the bundled sample at samples/flower_photos (60 photos) instead"


def photo_bytes(seed, mode="RGB", image_format="JPEG", size=(16, 16)):
    """An image of random pixels: every seed gives other bytes."""
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).convert(mode).save(buffer, image_format)
    return buffer.getvalue()


def make_source(root, photos_per_class):
    """A folder laid out like flower_photos: one sub-folder per class, and a LICENSE.txt."""
    for class_name, count in photos_per_class.items():
        (root / class_name).mkdir(parents=True)
        for i in range(count):
            (root / class_name / f"{class_name}_{i:02d}.jpg").write_bytes(photo_bytes(f"{class_name}{i}"))
    (root / "LICENSE.txt").write_text("All images in this archive are licensed under CC-BY.\n")
    return root


def split_data(*arguments):
    """Run split_data.py in this process; the finished run (returncode, stdout and stderr)."""
    return call_script("split_data.py", *arguments)


def split_run(source, dest, *options):
    """Split source into dest with split_data.py; return the manifest it wrote and the run."""
    result = split_data("--source", source, "--dest", dest, *options)
    assert result.returncode == 0, result.stderr
    return manifest_in(dest), result


def split(source, dest, *options):
    return split_run(source, dest, *options)[0]


def manifest_in(dest):
    return json.loads((dest / "manifest.json").read_text())


def assert_user_error(result, message):
    """Exit status 2 and one `split_data.py: error: ...` line matching the regular expression,
    last on stderr (a download's progress bar may come before it)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count(": error: ") == 1, result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith("split_data.py: error: ") and re.search(message, line), line


def files_under(folder):
    """{relative path: content} of every file below folder."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def written(dest, side):
    """{class: sorted file names} as they lie in dest/side."""
    return {folder.name: sorted(os.listdir(folder)) for folder in sorted((dest / side).iterdir())}


def all_names(manifest):
    return sorted(name for side in splitting.SIDES for names in manifest[side].values() for name in names)


@pytest.fixture
def source(tmp_path):
    return make_source(tmp_path / "photos", {"daisy": 10, "roses": 7, "tulips": 2, "single": 1})


def test_counts_per_class_and_no_photo_on_both_sides(source, tmp_path):
    dest = tmp_path / "fd"
    manifest, result = split_run(source, dest, "--val-ratio", "0.2")
    assert "warning: class single has only one distinct photo; val/single stays empty" in result.stderr
    # 0.2 * 2 rounds to 0, yet a class of two still gets one val photo; a class of one cannot.
    sizes = {side: {c: len(names) for c, names in manifest[side].items()} for side in splitting.SIDES}
    assert sizes["val"] == {"daisy": 2, "roses": 1, "single": 0, "tulips": 1}
    assert sizes["train"] == {"daisy": 8, "roses": 6, "single": 1, "tulips": 1}
    assert written(dest, "train") == manifest["train"]
    assert written(dest, "val") == manifest["val"]
    for class_name in manifest["classes"]:
        train, val = manifest["train"][class_name], manifest["val"][class_name]
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(os.listdir(source / class_name))
        for side, names in (("train", train), ("val", val)):
            for name in names:
                assert (dest / side / class_name / name).read_bytes() == (source / class_name / name).read_bytes()
    assert manifest["classes"] == ["daisy", "roses", "single", "tulips"]
    assert manifest["source"] == str(source.resolve())
    assert (manifest["dataset"], manifest["seed"], manifest["val_ratio"], manifest["link"]) == (
        "user folder",
        0,
        0.2,
        False,
    )


def test_the_split_ignores_the_order_the_file_system_lists_files_in(source, tmp_path, monkeypatch):
    expected = split(source, tmp_path / "as listed", "--seed", "3")
    real_listdir = os.listdir
    orders = {
        "reversed": lambda names: names[::-1],
        "shuffled": lambda names: random.Random(1).sample(names, len(names)),
    }
    for order_name, reorder in orders.items():
        listed = []

        def listdir(path=".", listed=listed, reorder=reorder):
            listed.append(path)
            return reorder(sorted(real_listdir(path)))

        monkeypatch.setattr(os, "listdir", listdir)
        assert split(source, tmp_path / order_name, "--seed", "3") == expected
        assert listed, "split_data no longer lists folders with os.listdir; this test must follow it"


def test_the_seed_changes_the_split(source, tmp_path):
    assert split(source, tmp_path / "a", "--seed", "0")["val"] != split(source, tmp_path / "b", "--seed", "1")["val"]


def test_identical_photos_land_on_the_same_side(tmp_path):
    source = make_source(tmp_path / "photos", {"sunflowers": 8})
    twins = ["a_twin.jpg", "m_twin.jpg", "z_twin.jpg"]
    for name in twins:
        (source / "sunflowers" / name).write_bytes(photo_bytes("twin"))
    sides_seen = set()
    for seed in range(10):
        val = split(source, tmp_path / "fd", "--seed", str(seed), "--val-ratio", "0.3")["val"]["sunflowers"]
        twins_in_val = {name in val for name in twins}
        assert len(twins_in_val) == 1, f"seed {seed} split the identical photos: val = {val}"
        sides_seen |= twins_in_val
    assert sides_seen == {True, False}, "the twins never reached one of the sides, so this test proved little"


def test_bad_files_are_skipped_listed_and_never_copied(tmp_path):
    source = make_source(tmp_path / "photos", {"daisy": 4, "roses": 4})
    (source / "daisy" / "empty.jpg").write_bytes(b"")
    whole = photo_bytes("big", size=(64, 64))
    (source / "daisy" / "truncated.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    (source / "roses" / "notes.txt").write_text("not a photo")
    (source / "roses" / ".DS_Store").write_bytes(b"\0\1")
    (source / ".thumbnails").mkdir()
    (source / ".thumbnails" / "x.jpg").write_bytes(photo_bytes("hidden"))
    dest = tmp_path / "fd"

    manifest, result = split_run(source, dest)

    assert manifest["skipped"] == [
        {"file": "LICENSE.txt", "reason": "not an image"},
        {"file": "daisy/empty.jpg", "reason": "empty file"},
        {"file": "daisy/truncated.jpg", "reason": "truncated or corrupt"},
        {"file": "roses/notes.txt", "reason": "not an image"},
    ]
    assert manifest["classes"] == ["daisy", "roses"]
    copied = {*files_under(dest / "train"), *files_under(dest / "val")}
    assert {path.split("/", 1)[1] for path in copied} == {
        f"{c}_{i:02d}.jpg" for c in ("daisy", "roses") for i in range(4)
    }
    out = result.stdout
    rows = [line.split() for line in out.splitlines()]
    assert ["daisy", "3", "1", "2"] in rows
    assert ["roses", "3", "1", "1"] in rows
    assert ["total", "6", "2", "4"] in rows
    for entry in manifest["skipped"]:
        assert f"skipped {entry['file']}: {entry['reason']}" in out


def test_grayscale_cmyk_palette_and_rgba_photos_are_kept(tmp_path):
    source = tmp_path / "photos"
    (source / "odd").mkdir(parents=True)
    kinds = {
        "gray.jpg": ("L", "JPEG"),
        "cmyk.jpg": ("CMYK", "JPEG"),
        "palette.png": ("P", "PNG"),
        "rgba.png": ("RGBA", "PNG"),
    }
    for name, (mode, image_format) in kinds.items():
        (source / "odd" / name).write_bytes(photo_bytes(name, mode, image_format))
        assert Image.open(source / "odd" / name).mode == mode
    manifest = split(source, tmp_path / "fd")
    assert manifest["skipped"] == []
    assert all_names(manifest) == sorted(kinds)


def test_the_source_is_left_untouched(source, tmp_path):
    def state():
        return {
            path.relative_to(source).as_posix(): (
                path.read_bytes() if path.is_file() else None,
                path.stat().st_mtime_ns,
            )
            for path in sorted(source.rglob("*"))
        }

    before = state()
    split(source, tmp_path / "copies")
    split(source, tmp_path / "links", "--link")
    split(source, tmp_path / "links", "--link", "--seed", "1")
    assert state() == before


def test_a_rerun_with_the_same_arguments_changes_nothing(source, tmp_path):
    dest = tmp_path / "fd"
    first = split(source, dest, "--seed", "5")
    files = files_under(dest)
    assert split(source, dest, "--seed", "5") == first
    assert files_under(dest) == files
    assert sorted(os.listdir(dest)) == ["manifest.json", "train", "val"]


def test_a_rebuild_leaves_no_photo_of_the_earlier_split_and_nothing_else_is_touched(source, tmp_path):
    dest = tmp_path / "fd"
    split(source, dest, "--seed", "0")
    (dest / "notes.txt").write_text("mine")
    (dest / "train" / "daisy" / "stale.jpg").write_bytes(photo_bytes("stale"))

    manifest = split(source, dest, "--seed", "1", "--val-ratio", "0.3")

    assert written(dest, "train") == manifest["train"]
    assert written(dest, "val") == manifest["val"]
    assert (dest / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(dest)) == ["manifest.json", "notes.txt", "train", "val"]


def test_link_hard_links_the_source_photos(source, tmp_path):
    dest = tmp_path / "fd"
    manifest = split(source, dest, "--link")
    assert manifest["link"] is True
    for side in splitting.SIDES:
        for class_name, names in manifest[side].items():
            for name in names:
                assert (dest / side / class_name / name).stat().st_ino == (source / class_name / name).stat().st_ino


def test_link_copies_where_hard_links_are_impossible(source, tmp_path, monkeypatch):
    def cross_device(source_path, target_path):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    dest = tmp_path / "fd"
    manifest, result = split_run(source, dest, "--link")
    for side in splitting.SIDES:
        for class_name, names in manifest[side].items():
            for name in names:
                photo, target = source / class_name / name, dest / side / class_name / name
                assert target.read_bytes() == photo.read_bytes()
                assert target.stat().st_ino != photo.stat().st_ino
    assert "20 copied where hard links are impossible" in result.stdout


def test_a_class_without_usable_photos_is_reported_and_left_out(tmp_path):
    source = make_source(tmp_path / "photos", {"daisy": 3})
    (source / "broken").mkdir()
    (source / "broken" / "a.jpg").write_bytes(b"")
    dest = tmp_path / "fd"
    manifest, captured = split_run(source, dest)
    assert manifest["classes"] == ["daisy"]
    assert not (dest / "train" / "broken").exists() and not (dest / "val" / "broken").exists()
    assert {"file": "broken/a.jpg", "reason": "empty file"} in manifest["skipped"]
    assert "class broken has no usable photos" in captured.stderr
    assert ["broken", "0", "0", "1"] in [line.split() for line in captured.stdout.splitlines()]


BAD_ARGUMENTS = {
    "missing source": (lambda source, tmp: ["--source", tmp / "nowhere"], "does not exist"),
    "source is a file": (lambda source, tmp: ["--source", source / "LICENSE.txt"], "is not a folder"),
    "no class folders": (lambda source, tmp: ["--source", source / "daisy"], "has no class folders"),
    "ratio 0": (lambda source, tmp: ["--source", source, "--val-ratio", "0"], "--val-ratio"),
    "ratio 1": (lambda source, tmp: ["--source", source, "--val-ratio", "1"], "--val-ratio"),
    "ratio above 1": (lambda source, tmp: ["--source", source, "--val-ratio", "1.5"], "--val-ratio"),
    "negative ratio": (lambda source, tmp: ["--source", source, "--val-ratio", "-0.1"], "--val-ratio"),
    "ratio nan": (lambda source, tmp: ["--source", source, "--val-ratio", "nan"], "--val-ratio"),
    "ratio inf": (lambda source, tmp: ["--source", source, "--val-ratio", "inf"], "--val-ratio"),
    "dest inside source": (lambda source, tmp: ["--source", source, "--dest", source / "split"], "inside the source"),
    "source is dest": (lambda source, tmp: ["--source", source, "--dest", source], "inside the source"),
    "dest is a file": (
        lambda source, tmp: ["--source", source, "--dest", source / "LICENSE.txt"],
        "--dest .* is not a folder",
    ),
    "not a URL": (lambda source, tmp: ["--url", "flower_photos.tgz"], "cannot download --url flower_photos.tgz"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_input_is_a_user_error_and_writes_nothing(case, source, tmp_path):
    make_arguments, message = BAD_ARGUMENTS[case]
    before = files_under(tmp_path)
    assert_user_error(split_data("--dest", tmp_path / "fd", *make_arguments(source, tmp_path)), message)
    assert files_under(tmp_path) == before
    assert not (tmp_path / "fd").exists() and not (source / "split").exists()


def test_a_source_inside_the_split_it_would_rebuild_is_refused(tmp_path):
    dest = tmp_path / "fd"
    make_source(dest / "train", {"daisy": 2})
    assert_user_error(split_data("--source", dest / "train", "--dest", dest), "inside .*train")
    assert sorted(os.listdir(dest / "train" / "daisy")) == ["daisy_00.jpg", "daisy_01.jpg"]


@pytest.mark.parametrize("case", ["missing source", "ratio above 1", "dest inside source"])
def test_bad_input_exits_2_with_one_line_on_stderr(case, source, tmp_path):
    make_arguments, message = BAD_ARGUMENTS[case]
    result = run_script("split_data.py", "--dest", tmp_path / "fd", *make_arguments(source, tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("split_data.py: error: ") and message in result.stderr
    assert result.stdout == ""


def test_without_source_a_downloaded_flower_photos_in_dest_is_used(tmp_path):
    dest = tmp_path / "fd"
    make_source(dest / "flower_photos", {"daisy": 3, "roses": 3})
    assert split_data("--dest", dest, "--url", closed_port_url()).returncode == 0
    manifest = manifest_in(dest)
    assert (manifest["dataset"], manifest["source"]) == ("flower_photos", str((dest / "flower_photos").resolve()))
    assert manifest["classes"] == ["daisy", "roses"]


def test_a_split_of_the_users_own_folder_is_kept_by_a_run_without_source(tmp_path):
    """make run's `python split_data.py` after the user's `--source my_photos`: nothing is lost."""
    source = make_source(tmp_path / "my_photos", {"daisy": 3, "roses": 3})
    dest = tmp_path / "fd"
    split(source, dest)
    before = files_under(dest)
    result = split_data("--dest", dest, "--url", closed_port_url())
    assert result.returncode == 0, result.stderr
    assert f"{dest} holds a split of your folder {source.resolve()} (6 photos); kept it" in result.stdout
    assert files_under(dest) == before
    resplit = split_data("--dest", dest, "--url", closed_port_url(), "--resplit")  # offline: the sample
    assert resplit.returncode == 0 and manifest_in(dest)["dataset"] == "bundled sample"


# Downloads, served by a local HTTP server.


@pytest.fixture
def serve():
    """serve(body, announce=None) starts a server on 127.0.0.1 and returns a URL that answers
    with body, announcing `announce` bytes: announcing more than body cuts the transfer short."""
    servers = []

    def start(body, announce=None):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(announce or len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output quiet
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/flower_photos.tgz"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/flower_photos.tgz"


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """The folder tempfile uses, so that a test can check nothing was left in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def make_archive(tmp_path, extra_members=()):
    """A tgz laid out like flower_photos.tgz (flower_photos/<class>/*.jpg and LICENSE.txt), then
    the (name, content) extra_members; return its bytes."""
    tree = make_source(tmp_path / "archived" / "flower_photos", {"daisy": 3, "tulips": 3})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tree, arcname="flower_photos")
        for name, content in extra_members:
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def expect(archive, monkeypatch):
    monkeypatch.setattr(splitting, "FLOWER_PHOTOS_SIZE", len(archive))
    monkeypatch.setattr(splitting, "FLOWER_PHOTOS_SHA256", hashlib.sha256(archive).hexdigest())


def test_a_good_download_is_extracted_once_and_split(tmp_path, serve, temp_dir, monkeypatch):
    archive = make_archive(tmp_path)
    expect(archive, monkeypatch)
    dest = tmp_path / "fd"
    url = serve(archive)

    result = split_data("--dest", dest, "--url", url)

    assert result.returncode == 0, result.stderr
    assert files_under(dest / "flower_photos") == files_under(tmp_path / "archived" / "flower_photos")
    manifest = manifest_in(dest)
    assert (manifest["dataset"], manifest["source"]) == ("flower_photos", str((dest / "flower_photos").resolve()))
    assert len(all_names(manifest)) == 6
    assert sorted(os.listdir(dest)) == ["flower_photos", "manifest.json", "train", "val"]
    assert list(temp_dir.iterdir()) == []
    assert f"— downloaded from {url}" in result.stdout
    # The next run finds the extracted set instead of downloading again.
    assert split_data("--dest", dest, "--url", closed_port_url()).returncode == 0
    assert manifest_in(dest) == manifest


def test_a_download_with_the_wrong_checksum_is_an_error_and_nothing_is_extracted(
    tmp_path, serve, temp_dir, monkeypatch
):
    archive = make_archive(tmp_path)
    expect(archive, monkeypatch)
    monkeypatch.setattr(splitting, "FLOWER_PHOTOS_SHA256", "0" * 64)
    dest = tmp_path / "fd"
    assert_user_error(
        split_data("--dest", dest, "--url", serve(archive)),
        f"sha256 {hashlib.sha256(archive).hexdigest()}, expected .*nothing was extracted",
    )
    assert not dest.exists()
    assert list(temp_dir.iterdir()) == []


def test_a_download_of_the_wrong_size_exits_2_as_a_real_process(tmp_path, serve):
    url = serve(b"not the archive")
    result = run_script("split_data.py", "--dest", tmp_path / "fd", "--url", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"split_data.py: error: {url} gave 15 bytes with sha256 {hashlib.sha256(b'not the archive').hexdigest()}, "
        "expected 228,813,984 bytes"
    )
    assert not (tmp_path / "fd").exists()


def test_a_tar_member_outside_the_archive_is_refused_and_nothing_is_extracted(tmp_path, serve, temp_dir, monkeypatch):
    archive = make_archive(tmp_path, [("../evil", b"gotcha")])
    expect(archive, monkeypatch)
    dest = tmp_path / "out" / "fd"
    assert_user_error(
        split_data("--dest", dest, "--url", serve(archive)), "could not safely extract .*evil.*nothing was extracted"
    )
    assert list(tmp_path.rglob("evil")) == []
    assert os.listdir(tmp_path / "out") == ["fd"] and os.listdir(dest) == []
    assert list(temp_dir.iterdir()) == []


def test_an_interrupted_download_falls_back_to_the_bundled_sample(tmp_path, serve, monkeypatch):
    archive = make_archive(tmp_path)
    expect(archive, monkeypatch)
    half = len(archive) // 2
    url = serve(archive[:half], announce=len(archive))
    monkeypatch.chdir(ROOT)
    dest = tmp_path / "fd"

    captured = split_data("--dest", dest, "--url", url)

    assert captured.returncode == 0, captured.stderr
    cut_short = f"transfer cut short after {half:,} of {len(archive):,} bytes"
    assert f"could not download {url} ({cut_short}){SAMPLE_FALLBACK}" in captured.stderr
    assert "data set: bundled sample (samples/flower_photos, 60 photos) — offline fallback" in captured.stdout
    manifest = manifest_in(dest)
    assert (manifest["dataset"], manifest["source"]) == ("bundled sample", str(splitting.SAMPLE_DIR))
    assert len(all_names(manifest)) == 60
    assert {c: len(manifest["val"][c]) for c in manifest["classes"]} == dict.fromkeys(
        ["daisy", "dandelion", "roses", "sunflowers", "tulips"], 1
    )
    assert manifest["skipped"] == [{"file": "LICENSE.txt", "reason": "not an image"}]
    assert not (dest / "flower_photos").exists()

    assert_user_error(
        split_data("--dest", tmp_path / "strict", "--url", url, "--no-fallback"), "cut short.*--no-fallback"
    )
    assert not (tmp_path / "strict").exists()


def test_an_unreachable_server_falls_back_to_the_bundled_sample(tmp_path, monkeypatch):
    url = closed_port_url()
    monkeypatch.chdir(ROOT)
    result = split_data("--dest", tmp_path / "fd", "--url", url)
    refused = f"[Errno {errno.ECONNREFUSED}] Connection refused"
    assert f"could not download {url} ({refused}){SAMPLE_FALLBACK}" in result.stderr
    assert manifest_in(tmp_path / "fd")["dataset"] == "bundled sample"


# What split_data must never harm, and what it leaves behind.


def test_photos_too_large_to_decode_are_skipped_and_named_so(tmp_path):
    source = make_source(tmp_path / "photos", {"daisy": 3, "roses": 3})
    write_bomb(source / "daisy" / "huge.png")  # above PIL's limit
    write_bomb(source / "roses" / "large.png", side=11000)  # between its warning and its limit
    manifest, result = split_run(source, tmp_path / "fd")
    reasons = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    assert reasons["daisy/huge.png"].startswith("image too large to decode safely (")
    assert reasons["roses/large.png"].startswith("image too large to decode safely (")
    assert "skipped daisy/huge.png: image too large to decode safely" in result.stdout
    assert all_names(manifest) == sorted(f"{c}_{i:02d}.jpg" for c in ("daisy", "roses") for i in range(3))


def test_links_to_nowhere_are_skipped_and_listed(tmp_path):
    source = make_source(tmp_path / "photos", {"daisy": 3, "roses": 3})
    os.symlink("loop.jpg", source / "daisy" / "loop.jpg")
    os.symlink("gone.jpg", source / "roses" / "dangling.jpg")
    os.symlink("tulips", source / "tulips")  # a class folder that is a link to itself
    manifest, _ = split_run(source, tmp_path / "fd")
    reasons = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    assert reasons == {
        "LICENSE.txt": "not an image",
        "daisy/loop.jpg": "a symbolic link that leads to no file",
        "roses/dangling.jpg": "a symbolic link that leads to no file",
        "tulips": "a symbolic link that leads to no file",
    }
    assert manifest["classes"] == ["daisy", "roses"] and len(all_names(manifest)) == 6


def test_a_pipe_named_like_a_photo_is_skipped_not_read(tmp_path):
    source = make_source(tmp_path / "photos", {"daisy": 3, "roses": 3})
    os.mkfifo(source / "daisy" / "fifo.jpg")  # reading it would wait forever
    result = run_script("split_data.py", "--source", source, "--dest", tmp_path / "fd", timeout=120)
    assert result.returncode == 0, result.stderr
    reasons = {entry["file"]: entry["reason"] for entry in manifest_in(tmp_path / "fd")["skipped"]}
    assert reasons["daisy/fifo.jpg"] == "not a regular file (a pipe, socket or device)"
    assert len(all_names(manifest_in(tmp_path / "fd"))) == 6


FOREIGN_SIDES = {  # what the user has in DEST, whether an earlier split's manifest is there, the reason
    "a class of the user's, no manifest": ("train/mine/thesis.txt", False, "no manifest.json of split_data.py"),
    "a loose file, no manifest": ("val/notes.txt", False, "no manifest.json of split_data.py"),
    "a folder the manifest does not list": ("train/mine/thesis.txt", True, "its manifest.json does not list mine"),
    "a file the manifest does not list": ("val/notes.txt", True, "its manifest.json does not list notes.txt"),
}


@pytest.mark.parametrize("case", FOREIGN_SIDES)
def test_a_train_or_val_that_split_data_did_not_write_is_refused_and_kept(source, tmp_path, case):
    dest = tmp_path / "fd"
    mine, earlier_split, reason = FOREIGN_SIDES[case]
    if earlier_split:
        split(source, dest)
    (dest / mine).parent.mkdir(parents=True, exist_ok=True)
    (dest / mine).write_text("chapter 1")
    before = files_under(dest)
    side = mine.split("/")[0]
    result = split_data("--source", source, "--dest", dest, "--seed", "1")
    assert_user_error(
        result,
        f"--dest {re.escape(str(dest))} holds a {side}/ that split_data.py did not write "
        f"\\({reason}.*choose another --dest or move {re.escape(str(dest / side))} away",
    )
    assert files_under(dest) == before


def test_a_foreign_train_is_refused_before_any_download(tmp_path):
    dest = tmp_path / "fd"
    dest.mkdir()
    (dest / "train").write_text("a file where the split goes")
    result = run_script("split_data.py", "--dest", dest, "--url", closed_port_url(), cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "holds a train/ that split_data.py did not write" in result.stderr
    assert os.listdir(dest) == ["train"]


def test_scratch_folders_of_killed_runs_are_cleared_and_nothing_else(source, tmp_path):
    dest = tmp_path / "fd"
    split(source, dest)
    killed = [dest / ".split_data-k1l2" / "old-train" / "daisy", dest / ".split_data-x9" / "val"]
    for folder in killed:
        folder.mkdir(parents=True)
        (folder / "photo.jpg").write_bytes(photo_bytes("left over"))
    kept = [dest / ".split_data_notes" / "a.txt", dest / "split_data-mine" / "b.txt", dest / ".cache" / "c.npy"]
    for path in kept:
        path.parent.mkdir(parents=True)
        path.write_text("not split_data's scratch")
    split(source, dest, "--seed", "2")
    assert sorted(os.listdir(dest)) == [
        ".cache",
        ".split_data_notes",
        "manifest.json",
        "split_data-mine",
        "train",
        "val",
    ]
    assert all(path.read_text() == "not split_data's scratch" for path in kept)


# The photos fail after two were copied; the manifest, written once, at once.
@pytest.mark.parametrize("writer, written", [("shutil.copy2", 2), ("pathlib.Path.write_text", 0)])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_split(source, tmp_path, monkeypatch, writer, written):
    dest = tmp_path / "fd"
    split(source, dest)
    before = folder_contents(dest)
    calls = []
    real = {"shutil.copy2": shutil.copy2, "pathlib.Path.write_text": pathlib.Path.write_text}[writer]

    def full_after_some(*args, **kwargs):
        calls.append(args)
        if len(calls) > written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, full_after_some)
    result = split_data("--source", source, "--dest", dest, "--seed", "3")
    assert len(calls) == written + 1
    assert_user_error(
        result,
        f"cannot write the split into {re.escape(str(dest))}: No space left on device; "
        f"{re.escape(str(dest))} is as it was",
    )
    assert folder_contents(dest) == before  # and no scratch folder is left


def test_a_dest_below_a_file_is_one_line(source, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert_user_error(
        split_data("--source", source, "--dest", tmp_path / "notes.txt" / "fd"),
        "cannot create the folder .*notes.txt/fd: Not a directory",
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_file_where_the_download_goes_is_refused_and_kept(tmp_path):
    dest = tmp_path / "fd"
    dest.mkdir()
    (dest / "flower_photos").write_text("my notes on flowers")
    assert_user_error(split_data("--dest", dest, "--url", closed_port_url()), "flower_photos is in the way")
    assert files_under(dest) == {"flower_photos": b"my notes on flowers"}
