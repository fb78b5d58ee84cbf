"""visualize.py on a tiny network and a folder of generated photos."""

import csv
import errno
import json
import os

import matplotlib.figure
import pytest
import torch
from PIL import Image

import zfnet.top9
from tests.helpers import (
    PREPROCESS,
    ROOT,
    assert_close,
    assert_one_line_error,
    assert_picture,
    call_script,
    flags_without_defaults,
    hide_progress_bars,
    record_figure_texts,
    run_script,
    save_network,
    tiny_network,
    write_bomb,
    write_photo,
    write_tied_photos,
)
from zfnet.checkpoint import load_checkpoint
from zfnet.deconv import crop, receptive_fields
from zfnet.images import load_input
from zfnet.projections import neuron_projections
from zfnet.spectra import noise_smoothness, smoothness


@pytest.fixture(autouse=True)
def no_progress_bars(monkeypatch):
    hide_progress_bars(monkeypatch)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_tied_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_network(tmp_path_factory.mktemp("run") / "best.pth", tiny_network(seed=0))


def visualize(*arguments):
    result = call_script("visualize.py", *arguments)
    assert result.returncode == 0, result.stderr
    return result


def test_top9_figures_and_index(photos, checkpoint, tmp_path):
    visualize(
        "top9",
        "--checkpoint",
        checkpoint,
        "--images",
        photos,
        "--out",
        tmp_path,
        "--layers",
        "1,5",
        "--maps-per-layer",
        "2",
        "--batch-size",
        "3",
        "--device",
        "cpu",
    )
    model, _ = load_checkpoint(checkpoint)
    fields = receptive_fields(model)
    index = json.loads((tmp_path / "top9.json").read_text())
    assert index["receptive_fields"]["5"] == {"size": 139, "stride": 16, "offset": -59}
    patches = index["patches"]
    assert len(patches) == 2 * 2 * 7  # layers x maps x (9 strongest of only 7 images)
    for layer in (1, 5):
        with Image.open(tmp_path / f"top9_layer{layer}.png") as figure:
            assert figure.width > 300 and figure.height > 150
        entries = [entry for entry in patches if entry["layer"] == layer]
        assert len({entry["map"] for entry in entries}) == 2
        for entry in entries:
            with torch.no_grad():
                maps = model.activations(load_input(entry["image"], PREPROCESS)[None], [layer])[layer]
            assert maps[0, entry["map"], entry["y"], entry["x"]].item() == pytest.approx(entry["value"], abs=1e-5)
            assert maps[0, entry["map"]].max().item() == pytest.approx(entry["value"], abs=1e-5)
            top, left, bottom, right = fields[layer].box(entry["y"], entry["x"])
            assert entry["box"] == [left, top, right, bottom]  # PIL's order, as in correspondence.json
        for m in {entry["map"] for entry in entries}:
            ranked = [entry for entry in entries if entry["map"] == m]
            assert [entry["rank"] for entry in ranked] == list(range(1, 8))
            assert [entry["value"] for entry in ranked] == sorted((entry["value"] for entry in ranked), reverse=True)


def test_top9_draws_the_maps_asked_for(photos, checkpoint, tmp_path):
    visualize(
        "top9", "--checkpoint", checkpoint, "--images", photos, "--out", tmp_path, "--layers", "2", "--maps", "0,7"
    )
    index = json.loads((tmp_path / "top9.json").read_text())
    assert sorted({entry["map"] for entry in index["patches"]}) == [0, 7]


@pytest.mark.parametrize("stretch", ["each", "shared"])
def test_top9_stretches_each_projection_or_a_maps_nine_by_one_scale(stretch, checkpoint, tmp_path, monkeypatch):
    import matplotlib.axes

    panels, imshow = [], matplotlib.axes.Axes.imshow
    monkeypatch.setattr(
        matplotlib.axes.Axes, "imshow", lambda axis, data, *a, **k: panels.append(data) or imshow(axis, data, *a, **k)
    )
    texts = record_figure_texts(monkeypatch)
    daisies = os.path.join(ROOT, "samples", "flower_photos", "daisy")
    flags = ("--images", daisies, "--out", tmp_path, "--layers", "1", "--maps-per-layer", "1", "--stretch", stretch)
    visualize("top9", "--checkpoint", checkpoint, *flags)
    values = [entry["value"] for entry in json.loads((tmp_path / "top9.json").read_text())["patches"]]
    assert values[0] > 1.1 * values[-1]  # nine activations of different strength
    # Layer 1's projections are the one filter times each activation: 7x7 tiles, 3 to a row.
    tiles = [torch.as_tensor(panels[0][2 + 9 * (r // 3) :][:7, 2 + 9 * (r % 3) :][:, :7]) for r in range(9)]
    contrast = [(tile - 0.5).abs().mean().item() for tile in tiles]
    if stretch == "each":
        assert max(contrast) - min(contrast) < 1e-3
        assert any("each projection stretched by its own" in text for text in texts)
    else:
        assert contrast == sorted(contrast, reverse=True) and contrast[0] > 1.1 * contrast[-1]
        assert any("stretched by one scale" in text for text in texts)


def test_a_top9_panel_says_on_how_many_photos_its_map_is_silent(photos, checkpoint, tmp_path, monkeypatch):
    """Among 7 photos some maps' tops hold photos where the map is silent (activation 0, a
    blank projection at a place of no meaning): their panels' titles say how many."""
    texts = record_figure_texts(monkeypatch)
    flags = ("--images", photos, "--out", tmp_path, "--layers", "5", "--maps-per-layer", "16", "--device", "cpu")
    visualize("top9", "--checkpoint", checkpoint, *flags)
    silent = {}
    for entry in json.loads((tmp_path / "top9.json").read_text())["patches"]:
        silent[entry["map"]] = silent.get(entry["map"], 0) + (entry["value"] <= 0)
    assert any(silent.values()) and not all(silent.values())
    titles = [text for text in texts if text.startswith("map ")]
    assert titles == [f"map {m}: silent on {n} of 7 photos (blank)" if n else f"map {m}" for m, n in silent.items()]


def test_top9_writes_beside_the_checkpoint_by_default(photos, tmp_path):
    checkpoint = save_network(tmp_path / "run" / "best.pth", tiny_network(seed=0))
    visualize("top9", "--checkpoint", checkpoint, "--images", photos, "--layers", "1", "--maps-per-layer", "1")
    assert (tmp_path / "run" / "visualize" / "top9.json").is_file()
    assert (tmp_path / "run" / "visualize" / "top9_layer1.png").is_file()


def test_filters_one_checkpoint_or_two_side_by_side(checkpoint, tmp_path):
    other = save_network(tmp_path / "alexnet.pth", tiny_network(arch="alexnet"))
    one = visualize("filters", "--checkpoint", checkpoint, "--out", tmp_path / "one")
    weights = load_checkpoint(checkpoint)[0].layer1.conv.weight.detach()
    assert f"layer-1 smoothness {smoothness(weights):.0%} (white noise {noise_smoothness(7):.0%})" in one.stdout
    visualize("filters", "--checkpoint", other, checkpoint, "--out", tmp_path / "two")
    with Image.open(tmp_path / "one" / "filters.png") as one, Image.open(tmp_path / "two" / "filters.png") as two:
        assert two.height > 1.5 * one.height  # a row per checkpoint


def test_filters_name_runs_relative_to_the_working_folder(tmp_path, monkeypatch):
    checkpoint = save_network(tmp_path / "run" / "best.pth", tiny_network(seed=0))
    monkeypatch.chdir(tmp_path / "run")
    texts = record_figure_texts(monkeypatch)
    visualize("filters", "--checkpoint", checkpoint)
    assert (tmp_path / "run" / "visualize" / "filters.png").is_file()  # beside the first checkpoint
    assert any(text.startswith("best.pth: as learned") for text in texts), texts
    assert not any(str(tmp_path) in text for text in texts), texts


def test_evolution_figures_and_change_table(photos, tmp_path):
    snapshots = tmp_path / "snapshots"
    first = tiny_network(seed=2)
    save_network(snapshots / "epoch_001.pth", first, epoch=1)
    save_network(snapshots / "epoch_002.pth", first, epoch=2)  # unchanged: every change must be zero
    save_network(snapshots / "epoch_005.pth", tiny_network(seed=3), epoch=5)
    # Without --out: visualize/ beside the snapshots folder, in the run folder.
    visualize(
        "evolution",
        "--snapshots",
        f"{snapshots}{os.sep}",
        "--images",
        photos,
        "--layers",
        "1,2",
        "--maps-per-layer",
        "3",
    )
    out = tmp_path / "visualize"
    for name in ("evolution_layer1.png", "evolution_layer2.png", "evolution_change.png"):
        assert (out / name).stat().st_size > 1000
    with open(out / "evolution_change.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 3 * 3  # layers x maps x snapshots
    by_epoch = {epoch: [row for row in rows if row["epoch"] == epoch] for epoch in ("1", "2", "5")}
    assert all(row["change_from_previous"] == "" for row in by_epoch["1"])
    assert all(abs(float(row["change_from_previous"])) < 1e-5 for row in by_epoch["2"])
    assert any(float(row["change_from_previous"]) > 0.01 for row in by_epoch["5"])
    assert all(os.path.isfile(row["strongest_image"]) for row in rows)
    with open(out / "evolution_weights.csv") as file:
        drift = {(row["layer"], row["epoch"]): row for row in csv.DictReader(file)}
    first, last = tiny_network(seed=2), tiny_network(seed=3)
    for layer in ("1", "2"):
        assert drift[layer, "1"]["from_first"] == "0.0" and drift[layer, "1"]["from_previous"] == ""
        assert float(drift[layer, "2"]["from_first"]) == 0 and float(drift[layer, "2"]["from_previous"]) == 0
        a, b = (net.stage(int(layer)).conv.weight.detach().double() for net in (first, last))
        assert float(drift[layer, "5"]["from_first"]) == pytest.approx(((b - a).norm() / a.norm()).item(), abs=1e-5)
        assert drift[layer, "5"]["from_previous"] == drift[layer, "5"]["from_first"]


def test_evolution_searches_at_most_max_images_from_every_class(photos, tmp_path):
    snapshots = tmp_path / "snapshots"
    for epoch in (1, 2):
        save_network(snapshots / f"epoch_00{epoch}.pth", tiny_network(seed=epoch), epoch=epoch)
    visualize("evolution", "--snapshots", snapshots, "--images", photos, "--layers", "1", "--max-images", "2")
    with open(tmp_path / "visualize" / "evolution_change.csv") as file:
        searched = {row["strongest_image"] for row in csv.DictReader(file)}
    assert searched <= {os.path.join(photos, "class0", "photo0.jpg"), os.path.join(photos, "class1", "photo9.jpg")}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["top9", "--checkpoint", "missing.pth"], "checkpoint not found"),
        (["top9", "--layers", "3"], "this network has no layer 3"),
        (["top9", "--layers", "9"], "this network has no layer 9"),
        (["top9", "--layers", "6"], "layer 6 is fully connected"),
        (["top9", "--layers", "1", "--maps", "6"], "layer 1 has no map 6"),
        (["top9", "--images", "EMPTY"], "no photos in"),
        (["top9", "--images", "nowhere"], "image folder not found"),
        (["top9", "--maps-per-layer", "0"], "at least 1"),
        (["evolution", "--max-images", "0"], "at least 1"),
        (["filters", "--checkpoint", "CHECKPOINT", "CHECKPOINT", "CHECKPOINT"], "one checkpoint or two"),
        (["evolution", "--snapshots", "ONE"], "needs at least two"),
        (["evolution", "--snapshots", "SAME"], "two snapshots of epoch 1; keep one of them"),
        (["top9", "--layers", "-1"], "this network has no layer -1"),
        (["top9", "--batch-size", "-2"], "at least 1"),
        (["evolution", "--maps-per-layer", "-3"], "at least 1"),
    ],
)
def test_bad_input_is_a_user_error(arguments, message, photos, tmp_path):
    model = tiny_network(conv_channels=(6, 16, 0, 0, 16))
    path = save_network(tmp_path / "removed.pth", model)
    save_network(tmp_path / "one" / "epoch_001.pth", model)
    for name in ("epoch_001.pth", "epoch_1.pth"):
        save_network(tmp_path / "same" / name, model, epoch=1)
    os.makedirs(tmp_path / "empty" / "class0")
    replace = {
        "EMPTY": str(tmp_path / "empty"),
        "CHECKPOINT": path,
        "ONE": str(tmp_path / "one"),
        "SAME": str(tmp_path / "same"),
    }
    arguments = [replace.get(argument, argument) for argument in arguments]
    defaults = ["--out", str(tmp_path / "out")]
    if arguments[0] == "top9":
        defaults += ["--images", photos] if "--images" not in arguments else []
        defaults += ["--checkpoint", path] if "--checkpoint" not in arguments else []
    assert_one_line_error(call_script("visualize.py", *arguments, *defaults), message)


@pytest.mark.parametrize("arguments", [["top9", "--checkpoint", "missing.pth"], ["evolution", "--snapshots", "."]])
def test_errors_exit_2_with_one_line(arguments, tmp_path):
    result = run_script("visualize.py", *arguments, "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("visualize.py: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not result.stdout


@pytest.mark.parametrize(
    "command, maps_per_layer, opening",
    [
        ("top9", 9, "Figure 2"),
        ("evolution", 4, "Figure 4"),
        ("filters", None, "Figure 6"),
        ("sanity", 9, "Sanity"),
        ("optimize", 9, "What each chosen map wants to see"),
    ],
)
def test_every_command_describes_itself_and_shows_its_defaults(command, maps_per_layer, opening):
    result = call_script("visualize.py", command, "--help")
    assert result.returncode == 0
    assert result.stdout.split("\n\n")[1].startswith(opening)  # the command's own description
    assert flags_without_defaults(result.stdout) == []
    assert "--top-maps" not in result.stdout
    if maps_per_layer:
        assert f"maps per layer, the most active ones (default: {maps_per_layer})" in result.stdout


# Hardening: outputs never over inputs or the user's files, photos the decoder refuses,
# filesystem trouble, and numbers checked before the search.


def folder_contents(folder):
    """Every file under `folder` with its bytes, to show that a refused run left it as it was."""
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def truncated_photo(path):
    write_photo(path, seed=5)
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


BAD_PHOTOS = {  # how to make one, and what the note says about it
    "bomb.png": (write_bomb, "too large to decode safely"),
    "truncated.jpg": (truncated_photo, "truncated or corrupt"),
    "loop.jpg": (lambda path: os.symlink("loop.jpg", path), "loop.jpg"),  # a link to itself
    "dangling.jpg": (lambda path: os.symlink("gone.jpg", path), "no such file"),
}


def photos_with(folder, *bad):
    """The seven tied photos, and the `bad` ones of BAD_PHOTOS among them (in class0/)."""
    write_tied_photos(folder)
    for name in bad:
        BAD_PHOTOS[name][0](os.path.join(folder, "class0", name))
    return str(folder)


def snapshots_of(folder):
    for epoch in (1, 2):
        save_network(folder / f"epoch_00{epoch}.pth", tiny_network(seed=epoch), epoch=epoch)
    return str(folder)


def network_flags(command, checkpoint, tmp_path):
    """What a command reads besides photos: the checkpoint, or snapshots made in tmp_path."""
    if command == "evolution":
        return ["--snapshots", snapshots_of(tmp_path / "snapshots")]
    return ["--checkpoint", checkpoint]


def run_on(command, checkpoint, tmp_path, photos, *arguments):
    """`command` over `photos`, its network made as `network_flags` says, into tmp_path/out."""
    return call_script(
        "visualize.py",
        command,
        *network_flags(command, checkpoint, tmp_path),
        "--images",
        photos,
        "--out",
        tmp_path / "out",
        *arguments,
    )


@pytest.mark.parametrize("bad", list(BAD_PHOTOS))
def test_top9_skips_a_photo_it_cannot_use_with_a_note(bad, checkpoint, tmp_path):
    photos = photos_with(tmp_path / "photos", bad)
    result = visualize(
        "top9",
        "--checkpoint",
        checkpoint,
        "--images",
        photos,
        "--out",
        tmp_path / "out",
        "--layers",
        "1",
        "--maps-per-layer",
        "1",
        "--batch-size",
        "3",
    )
    notes = [line for line in result.stderr.splitlines() if "note: skipped" in line]
    assert len(notes) == 1 and os.path.join("class0", bad) in notes[0] and BAD_PHOTOS[bad][1] in notes[0], notes
    patches = json.loads((tmp_path / "out" / "top9.json").read_text())["patches"]
    assert len(patches) == 7 and not any(bad in entry["image"] for entry in patches)  # the 7 good ones, ranked


def test_evolution_skips_photos_it_cannot_use_with_a_note_each(tmp_path):
    photos = photos_with(tmp_path / "photos", "bomb.png", "truncated.jpg")
    result = visualize(
        "evolution",
        "--snapshots",
        snapshots_of(tmp_path / "snapshots"),
        "--images",
        photos,
        "--layers",
        "1",
        "--maps-per-layer",
        "1",
        "--out",
        tmp_path / "out",
    )
    notes = [line for line in result.stderr.splitlines() if "note: skipped" in line]
    assert len(notes) == 2 and "bomb.png: image too large to decode safely" in notes[0], notes
    assert "truncated.jpg: truncated or corrupt" in notes[1], notes
    assert (tmp_path / "out" / "evolution_change.csv").is_file()


@pytest.mark.parametrize("command", ["top9", "evolution"])
def test_no_usable_photo_is_a_one_line_error(command, checkpoint, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("bomb.png", "truncated.jpg", "loop.jpg"):
        BAD_PHOTOS[name][0](str(photos / name))
    result = run_on(command, checkpoint, tmp_path, photos)
    assert_one_line_error(result, f"none of the 3 photos in {photos} can be used (the first: {photos / 'bomb.png'}")


@pytest.mark.parametrize("command", ["top9", "evolution"])
def test_out_in_the_photos_own_folder_is_refused_and_every_photo_kept(command, checkpoint, tmp_path):
    photos = photos_with(tmp_path / "photos")
    before = folder_contents(photos)
    for out in (photos, os.path.join(photos, "class0"), os.path.join(photos, "figures")):
        result = call_script(
            "visualize.py", command, *network_flags(command, checkpoint, tmp_path), "--images", photos, "--out", out
        )
        assert_one_line_error(result, f"--out {out} is within --images {photos}, whose files are read as inputs")
        assert folder_contents(photos) == before  # nothing written, nothing replaced


@pytest.mark.parametrize("command", ["top9", "filters", "evolution"])
def test_a_folder_of_the_users_files_is_refused_and_left_alone(command, photos, checkpoint, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("three years of work")
    (mine / "top9.json").write_text("{}")  # one of visualize's names beside the user's file does not make it ours
    flags = network_flags(command, checkpoint, tmp_path) + (["--images", photos] if command != "filters" else [])
    assert_one_line_error(
        call_script("visualize.py", command, *flags, "--out", mine), "already holds files that zfnet did not write"
    )
    assert folder_contents(mine) == {"thesis.txt": b"three years of work", "top9.json": b"{}"}


def test_a_folder_of_earlier_outputs_without_a_marker_is_taken_back(checkpoint, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("top9_layer3.png", "top9.json", "evolution_layer1.png", "evolution_change.csv", "filters.png"):
        (old / name).write_bytes(b"from an earlier version")
    visualize("filters", "--checkpoint", checkpoint, "--out", old)
    assert_picture(old / "filters.png")
    assert (old / "top9.json").read_bytes() == b"from an earlier version"


def test_an_output_that_is_one_of_the_inputs_is_refused_before_the_search(photos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    visualize("filters", "--checkpoint", save_network(tmp_path / "best.pth", tiny_network()), "--out", out)
    disguised = save_network(out / "filters.png", tiny_network())  # a checkpoint under an output's name
    before = (out / "filters.png").read_bytes()
    assert_one_line_error(
        call_script("visualize.py", "filters", "--checkpoint", disguised, "--out", out),
        f"writing {disguised} would replace one of the inputs",
    )
    monkeypatch.setattr(zfnet.top9, "usable_batches", None)  # the search must not start
    save_network(out / "top9.json", tiny_network())
    assert_one_line_error(
        call_script("visualize.py", "top9", "--checkpoint", out / "top9.json", "--images", photos, "--out", out),
        "would replace one of the inputs",
    )
    assert (out / "filters.png").read_bytes() == before
    snapshots = snapshots_of(tmp_path / "snapshots")
    assert_one_line_error(
        call_script("visualize.py", "evolution", "--snapshots", snapshots, "--images", photos, "--out", snapshots),
        "already holds files that zfnet did not write",
    )


def disk_full(monkeypatch):
    """From now on every figure's writer fails half-way, as on a full disk."""

    def failing(figure, file, **kwargs):
        file.write(b"\x89PNG half a figure")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing)


@pytest.mark.parametrize("command", ["top9", "filters", "evolution"])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_outputs(command, photos, checkpoint, tmp_path, monkeypatch):
    flags = [*network_flags(command, checkpoint, tmp_path), "--out", tmp_path / "out"]
    if command != "filters":
        flags += ["--images", photos, "--layers", "1", "--maps-per-layer", "1"]
    visualize(command, *flags)
    before = folder_contents(tmp_path / "out")
    disk_full(monkeypatch)
    assert_one_line_error(
        call_script("visualize.py", command, *flags), "No space left on device; what was there before is unchanged"
    )
    assert folder_contents(tmp_path / "out") == before  # and no half-written file beside them


@pytest.mark.parametrize("command", ["top9", "filters", "evolution"])
def test_an_out_that_is_a_file_is_one_line(command, photos, checkpoint, tmp_path):
    (tmp_path / "notes").write_text("mine")
    flags = network_flags(command, checkpoint, tmp_path) + (["--images", photos] if command != "filters" else [])
    assert_one_line_error(
        call_script("visualize.py", command, *flags, "--out", tmp_path / "notes"),
        f"--out {tmp_path / 'notes'} is a file, not a folder",
    )
    assert (tmp_path / "notes").read_text() == "mine"


@pytest.mark.parametrize(
    "command, arguments, message",
    [
        ("top9", ["--maps-per-layer", "999"], "--maps-per-layer 999: layer 1 has only 8 maps"),
        ("top9", ["--layers", "2,1", "--maps-per-layer", "9"], "--maps-per-layer 9: layer 1 has only 8 maps"),
        ("top9", ["--maps", "3,999"], "layer 1 has no map 999 (it has 8 maps, 0 to 7)"),
        ("top9", ["--maps", "-1"], "layer 1 has no map -1"),
        ("evolution", ["--layers", "2,5", "--maps-per-layer", "17"], "--maps-per-layer 17: layer 2 has only 16 maps"),
        ("evolution", ["--layers", "2", "--maps", "16"], "layer 2 has no map 16 (it has 16 maps, 0 to 15)"),
    ],
)
def test_map_counts_beyond_a_layer_are_refused_before_the_search(
    command, arguments, message, photos, checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setattr(zfnet.top9, "usable_batches", None)  # the search must not start
    result = run_on(command, checkpoint, tmp_path, photos, *arguments)
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def test_without_the_flag_a_narrower_layer_shows_all_its_maps(photos, checkpoint, tmp_path):
    visualize("top9", "--checkpoint", checkpoint, "--images", photos, "--out", tmp_path, "--layers", "1")
    patches = json.loads((tmp_path / "top9.json").read_text())["patches"]
    assert sorted({entry["map"] for entry in patches}) == list(range(8))  # the default 9 of 8 maps


def test_a_layer_or_map_named_twice_is_shown_once(photos, checkpoint, tmp_path):
    visualize(
        "top9", "--checkpoint", checkpoint, "--images", photos, "--out", tmp_path, "--layers", "1,1", "--maps", "2,2"
    )
    patches = json.loads((tmp_path / "top9.json").read_text())["patches"]
    assert len(patches) == 7 and {entry["map"] for entry in patches} == {2}


# The rule as a choice, and the sanity checks.


def recorded(monkeypatch, module, name):
    """Calls of `module.name` recorded (their arguments) while they still run."""
    calls, original = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **kwargs: calls.append(args) or original(*args, **kwargs))
    return calls


@pytest.mark.parametrize("rule", ["guided", "gradient"])
def test_top9_by_a_rule_draws_what_zfnet_projections_gives(rule, photos, checkpoint, tmp_path, monkeypatch):
    import zfnet.studies.features as features

    drawn = recorded(monkeypatch, features, "plot_top9")
    flags = ("--layers", "2,4", "--maps-per-layer", "2", "--rule", rule, "--out", tmp_path, "--device", "cpu")
    visualize("top9", "--checkpoint", checkpoint, "--images", photos, *flags)
    model, _ = load_checkpoint(checkpoint)
    fields = receptive_fields(model)
    patches = json.loads((tmp_path / "top9.json").read_text())["patches"]
    assert json.loads((tmp_path / "top9.json").read_text())["rule"] == rule
    for (shown, maps, layer, *_), figure_rule in zip(drawn, [call[-1] for call in drawn]):
        assert figure_rule == rule
        for (projections, _, _), m in zip(shown, maps):
            entries = [entry for entry in patches if entry["layer"] == layer and entry["map"] == m]
            for projection, entry in zip(projections, entries):
                x = load_input(entry["image"], PREPROCESS)[None]
                (gradient,) = neuron_projections(model, x, [(0, layer, m, entry["y"], entry["x"])], rule)
                expected = crop(entry["value"] * gradient, fields[layer].box(entry["y"], entry["x"]))
                assert_close(projection, expected)


def test_evolution_by_a_rule_traces_what_zfnet_projections_gives(photos, tmp_path, monkeypatch):
    import zfnet.studies.evolution as evolution

    snapshots = snapshots_of(tmp_path / "snapshots")
    drawn = recorded(monkeypatch, evolution, "plot")
    flags = ("--layers", "3", "--maps-per-layer", "2", "--rule", "guided", "--out", tmp_path / "out")
    visualize("evolution", "--snapshots", snapshots, "--images", photos, *flags)
    with open(tmp_path / "out" / "evolution_change.csv") as file:
        rows = list(csv.DictReader(file))
    fields = receptive_fields(tiny_network(seed=1))
    ((projections, maps, epochs, _, title),) = drawn
    assert "guided backpropagation" in title and epochs == [1, 2]
    for i, m in enumerate(maps):
        for s, epoch in enumerate(epochs):
            row = next(row for row in rows if row["map"] == str(m) and row["epoch"] == str(epoch))
            model = tiny_network(seed=epoch)
            y, x = int(row["y"]), int(row["x"])
            inputs = load_input(row["strongest_image"], PREPROCESS)[None]
            (gradient,) = neuron_projections(model, inputs, [(0, 3, m, y, x)], "guided")
            expected = crop(float(row["strongest_value"]) * gradient, fields[3].box(y, x))
            assert_close(projections[i][s], expected)


def test_sanity_writes_its_verdicts_tables_and_figures(photos, checkpoint, tmp_path):
    flags = ("--layers", "1,3,5", "--maps-per-layer", "2", "--out", tmp_path, "--device", "cpu")
    result = visualize("sanity", "--checkpoint", checkpoint, "--images", photos, *flags)
    report = json.loads((tmp_path / "sanity.json").read_text())
    assert report["steps"][0] == "classifier" and report["steps"][-1] == "layer 1"
    assert set(report["verdicts"]) == {"deconvnet", "guided", "gradient"}
    assert set(report["recommended"]) == {"1", "3", "5"}
    assert len(report["activations"]) == 3 * 2 * 7  # layers x maps x (9 strongest of only 7 photos)
    with open(tmp_path / "sanity.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 * 3 * len(report["steps"])
    for rule, verdicts in report["verdicts"].items():
        for layer, sentence in verdicts.items():
            assert sentence in result.stdout
            last = next(
                r for r in rows if (r["rule"], r["layer"], r["reinitialised_down_to"]) == (rule, layer, "layer 1")
            )
            assert sentence.startswith(f"layer {layer}, {rule}: {float(last['spearman_mean']):.2f} of the picture")
    # The steps above a layer leave its pictures as they were.
    for row in rows:
        if int(row["layer"]) < 5 and row["reinitialised_down_to"] in ("classifier", "layer 7", "layer 6", "layer 5"):
            assert float(row["spearman_mean"]) == pytest.approx(1.0)
    assert_picture(tmp_path / "sanity.png", (800, 500))
    assert_picture(tmp_path / "sanity_example.png", (500, 200))


def test_optimize_draws_each_map_s_picture_beside_its_strongest_photo(photos, checkpoint, tmp_path):
    flags = ("--layers", "1,5", "--maps", "2,3", "--steps", "24", "--seed", "7", "--out", tmp_path, "--device", "cpu")
    result = visualize("optimize", "--checkpoint", checkpoint, "--images", photos, *flags)
    report = json.loads((tmp_path / "optimize.json").read_text())
    assert (report["steps"], report["seed"]) == (24, 7)
    assert [(entry["layer"], entry["map"]) for entry in report["maps"]] == [(1, 2), (1, 3), (5, 2), (5, 3)]
    assert all(entry["variant"] == 0 and entry["style_similarity"] is None for entry in report["maps"])
    model, checkpoint_data = load_checkpoint(checkpoint, "cpu")
    for entry in report["maps"]:
        # The strongest photo's number is the map's largest activation over that photo.
        inputs = load_input(entry["strongest_photo_path"], checkpoint_data["preprocess"])[None]
        activations = model.activations(inputs, [entry["layer"]])[entry["layer"]][0, entry["map"]]
        assert entry["strongest_photo"] == pytest.approx(activations.max().item(), rel=1e-5)
        assert entry["ratio"] == pytest.approx(entry["optimised"] / entry["strongest_photo"])
    for layer in (1, 5):
        entries = [entry for entry in report["maps"] if entry["layer"] == layer]
        beaten = sum(entry["optimised"] > entry["strongest_photo"] for entry in entries)
        assert f"layer {layer}: {beaten} of 2 optimised pictures excite their map more" in result.stdout
    assert_picture(tmp_path / "optimize.png", (400, 800))


def test_optimize_diverse_draws_k_pictures_of_each_map_above_its_strongest_photo(photos, checkpoint, tmp_path):
    flags = (
        "optimize",
        "--checkpoint",
        checkpoint,
        "--images",
        photos,
        "--layers",
        "2",
        "--maps",
        "1,4",
        "--steps",
        "12",
    )
    result = visualize(*flags, "--diverse", "3", "--out", tmp_path)
    entries = json.loads((tmp_path / "optimize.json").read_text())["maps"]
    assert [(entry["map"], entry["variant"]) for entry in entries] == [(m, k) for m in (1, 4) for k in range(3)]
    for entry in entries:
        first = next(e for e in entries if e["map"] == entry["map"])
        assert entry["strongest_photo"] == first["strongest_photo"] and entry["seconds"] == first["seconds"]
        assert entry["ratio"] == pytest.approx(entry["optimised"] / entry["strongest_photo"])
    assert len({entry["optimised"] for entry in entries}) == 6  # six pictures, not one drawn three times
    beaten = sum(entry["optimised"] > entry["strongest_photo"] for entry in entries)
    assert f"layer 2: {beaten} of 6 optimised pictures excite their map more" in result.stdout
    alike = [entry["style_similarity"] for entry in entries]
    assert all(-1 <= value < 1 for value in alike)
    assert f"s a map (3 pictures; style similarity to a map's others {min(alike):.2f}-{max(alike):.2f}" in result.stdout
    # Three rows of pictures above one of patches: twice the rows of one picture a map.
    visualize(*flags, "--out", tmp_path / "one")
    with Image.open(tmp_path / "optimize.png") as diverse, Image.open(tmp_path / "one" / "optimize.png") as one:
        assert diverse.width == one.width and diverse.height > 1.7 * one.height


@pytest.mark.parametrize("command", ["top9", "evolution"])
def test_an_unknown_rule_is_one_line(command, photos, checkpoint, tmp_path):
    process = run_on(command, checkpoint, tmp_path, photos, "--rule", "deconv")
    assert_one_line_error(process, "argument --rule: invalid choice: 'deconv'")
    assert not (tmp_path / "out").exists()


def test_top9_tiles_are_at_least_as_large_as_the_patches(photos, checkpoint, tmp_path):
    visualize("top9", "--checkpoint", checkpoint, "--images", photos, "--layers", "5", "--out", tmp_path)
    with Image.open(tmp_path / "top9_layer5.png") as figure:
        width, height = figure.size
    # Three panels a row, each two 3x3 grids of 139-pixel tiles side by side; three rows.
    assert width >= 3 * 2 * 3 * 139 and height >= 3 * 3 * 139


def test_a_layer_1_near_noise_level_is_said_in_one_line(photos, checkpoint, tmp_path):
    random_filters = visualize("filters", "--checkpoint", checkpoint, "--out", tmp_path / "random")
    model, _ = load_checkpoint(checkpoint)
    own, noise = smoothness(model.layer1.conv.weight.detach()), noise_smoothness(7)
    assert own < 2 * noise
    note = f"note: layer 1 is still near noise level (smoothness {own:.1%}, white noise {noise:.1%}): "
    assert note in random_filters.stdout
    assert "flower_photos python train.py trains a readable one in its 10 epochs" in random_filters.stdout
    top9 = visualize("top9", "--checkpoint", checkpoint, "--images", photos, "--layers", "2", "--out", tmp_path / "t")
    assert top9.stderr.count(note) == 1

    smooth = tiny_network(seed=0)
    ramp = torch.linspace(-1, 1, 7)
    with torch.no_grad():  # each filter a wide edge: all its energy at the lowest frequencies
        signs = torch.randn(len(smooth.layer1.conv.weight), 3, 1, 1, generator=torch.Generator().manual_seed(0))
        smooth.layer1.conv.weight.copy_(signs * ramp[None, None, :, None] + 0.1 * signs * ramp[None, None, None, :])
    path = save_network(tmp_path / "smooth.pth", smooth)
    learned = visualize("filters", "--checkpoint", path, "--out", tmp_path / "smooth")
    assert "near noise level" not in learned.stdout + learned.stderr
