import os

import pytest

from zfnet.errors import UserError
from zfnet.files import PARTIAL_PREFIX, atomic_write_text, remove_debris, write_text_if_changed


def test_atomic_text_replaces_the_file_whole_with_the_umask_mode(tmp_path):
    path = tmp_path / "a" / "notes.txt"
    atomic_write_text(path, "first")
    previous = os.umask(0o027)
    try:
        atomic_write_text(path, "second")
    finally:
        os.umask(previous)
    assert path.read_text() == "second"
    assert path.stat().st_mode & 0o777 == 0o640
    assert os.listdir(path.parent) == ["notes.txt"]


def test_text_is_written_only_when_it_changes(tmp_path):
    path = tmp_path / "page.html"
    assert write_text_if_changed(path, "Map 3 · 7×7")
    os.utime(path, ns=(1, 1))
    assert not write_text_if_changed(path, "Map 3 · 7×7")
    assert path.stat().st_mtime_ns == 1
    assert write_text_if_changed(path, "Map 4 · 7×7")
    assert path.read_text() == "Map 4 · 7×7" and path.stat().st_mtime_ns != 1
    path.write_bytes(b"\xff\xfe not text")
    assert write_text_if_changed(path, "Map 4") and path.read_text() == "Map 4"


def test_a_folder_in_the_way_is_one_line(tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(UserError, match="a folder of that name is in the way"):
        atomic_write_text(tmp_path / "out.csv", "x")


def test_debris_of_killed_writers_is_removed_and_nothing_else(tmp_path):
    (tmp_path / "snapshots").mkdir()
    debris = [tmp_path / f"{PARTIAL_PREFIX}abc", tmp_path / "snapshots" / f"{PARTIAL_PREFIX}def"]
    kept = [tmp_path / "last.pth", tmp_path / ".tmp-someone-elses", tmp_path / "snapshots" / "epoch_001.pth"]
    for path in debris + kept:
        path.write_bytes(b"x")
    remove_debris(str(tmp_path))
    assert not any(path.exists() for path in debris)
    assert all(path.exists() for path in kept)
