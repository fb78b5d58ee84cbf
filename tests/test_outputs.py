import contextlib
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import ON_CPU, assert_one_line_error, call_script, folder_contents
from zfnet.errors import UserError
from zfnet.outputs import MARKER, MARKER_TEXT, OutputFolder, release


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


HOLD = (
    "import sys; from zfnet.outputs import OutputFolder; OutputFolder.claim(sys.argv[1]); "
    "print('claimed', flush=True); sys.stdin.read()"
)


@contextlib.contextmanager
def holder(folder):
    """A process that has claimed `folder` and holds it until the block ends (or it is killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline() == "claimed\n"  # it holds the folder now: no sleep, no race
        yield process
    finally:
        process.kill()
        process.wait(timeout=60)


def test_a_second_writer_is_refused_naming_the_holder_and_the_holders_files_stay(tmp_path):
    out = tmp_path / "run"
    with holder(out) as process:
        live = out / ".zfnet-partial-checkpoint"  # the holder's file being written
        live.write_bytes(b"half a checkpoint")
        with pytest.raises(UserError, match=rf"--out {out} is in use by process {process.pid} \(-c .*\)"):
            OutputFolder.claim(str(out))
        assert live.read_bytes() == b"half a checkpoint"  # a refused claim cleans nothing
        process.stdin.close()  # the holder ends its work and gives the folder back
        assert process.wait(timeout=60) == 0
    OutputFolder.claim(str(out))
    release(str(out))
    assert (out / MARKER).read_text() == MARKER_TEXT  # no holder named any more


def test_the_lock_of_a_killed_process_is_taken_over_with_a_note(tmp_path, capsys):
    out = tmp_path / "run"
    with holder(out) as process:
        (out / ".zfnet-partial-checkpoint").write_bytes(b"half a checkpoint")
        process.send_signal(signal.SIGKILL)  # kill -9: no chance to give the folder back
        process.wait(timeout=60)
    capsys.readouterr()
    OutputFolder.claim(str(out))
    note = capsys.readouterr().err
    assert note.startswith(f"note: taking over {out}, left locked by process {process.pid} (")
    assert note.rstrip().endswith("which is no longer running")
    assert not (out / ".zfnet-partial-checkpoint").exists()  # its debris is cleaned, under the lock
    release(str(out))


def test_train_py_into_a_folder_in_use_is_one_line_and_touches_nothing(colour_split, tmp_path):
    out = tmp_path / "run"
    with holder(out) as process:
        before = folder_contents(out)
        result = call_script("train.py", "--data", colour_split, "--out", out, *ON_CPU)
        assert_one_line_error(result, f"--out {out} is in use by process {process.pid}")
        assert folder_contents(out) == before
