import os

import pytest

from zfnet.errors import UserError
from zfnet.outputs import MARKER, OutputFolder


def test_a_new_folder_is_created_and_marked(tmp_path):
    out = OutputFolder.claim(str(tmp_path / "new" / "figures"))
    assert os.path.isfile(os.path.join(out.folder, MARKER))
    assert out.path("a.png") == str(tmp_path / "new" / "figures" / "a.png")


def test_an_empty_folder_and_one_of_ours_are_taken(tmp_path):
    (tmp_path / "empty").mkdir()
    OutputFolder.claim(str(tmp_path / "empty"))
    (tmp_path / "empty" / "figure.png").write_bytes(b"png")
    OutputFolder.claim(str(tmp_path / "empty"))  # marked now: taken again
    assert (tmp_path / "empty" / "figure.png").exists()


def test_a_folder_of_the_users_files_is_refused_and_left_alone(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "flower.png").write_bytes(b"the user's photo")
    with pytest.raises(UserError, match="already holds files that zfnet did not write"):
        OutputFolder.claim(str(photos), inputs=[str(photos / "flower.png")])
    assert os.listdir(photos) == ["flower.png"]
    assert (photos / "flower.png").read_bytes() == b"the user's photo"


def test_a_folder_holding_only_the_scripts_own_file_names_is_taken_back(tmp_path):
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    for name in ("best.pth", "last.pth", "metrics.csv"):
        (run / name).write_bytes(b"x")
    OutputFolder.claim(str(run), outputs=("*.pth", "*.csv", "snapshots"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "best.pth").write_bytes(b"x")
    (other / "thesis.txt").write_text("mine")
    with pytest.raises(UserError, match="did not write"):
        OutputFolder.claim(str(other), outputs=("*.pth",))


def test_an_output_that_is_an_input_is_refused(tmp_path):
    out = OutputFolder.claim(str(tmp_path / "out"))
    photo = tmp_path / "out" / "photo.png"
    photo.write_bytes(b"photo")
    out = OutputFolder.claim(str(tmp_path / "out"), inputs=[str(photo)])
    with pytest.raises(UserError, match="would replace one of the inputs"):
        out.path("photo.png")
    assert photo.read_bytes() == b"photo"


def test_a_file_given_as_the_folder_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        OutputFolder.claim(str(tmp_path / "file"))
    assert (tmp_path / "file").read_text() == "x"


def test_debris_of_a_killed_writer_is_cleared_when_the_folder_is_claimed(tmp_path):
    out = OutputFolder.claim(str(tmp_path / "out"))
    debris = tmp_path / "out" / ".zfnet-partial-x1"
    debris.write_bytes(b"half")
    OutputFolder.claim(out.folder)
    assert not debris.exists()
