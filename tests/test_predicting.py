import os

import pytest
import torch
from PIL import Image

from tests.helpers import CLASSES, PREPROCESS, tiny_network, write_bomb, write_photo
from zfnet.errors import UserError
from zfnet.images import load_input
from zfnet.predicting import check_figure_path, classify, find_photos


def test_find_photos_keeps_files_as_given_and_searches_folders(tmp_path):
    folder = [write_photo(tmp_path / "photos" / "b" / "2.jpg", 1), write_photo(tmp_path / "photos" / "a.jpg", 0)]
    given = str(tmp_path / "elsewhere.jpg")  # not checked here: classify reports it
    assert find_photos([given, str(tmp_path / "photos")]) == [given, *sorted(folder)]


def test_classify_yields_the_top_classes_in_order_and_the_errors_in_place(tmp_path):
    model = tiny_network()
    photos = [write_photo(tmp_path / f"{index}.jpg", index) for index in range(5)]
    (tmp_path / "notes.jpg").write_text("not a photo")
    paths = [*photos[:2], str(tmp_path / "notes.jpg"), *photos[2:]]
    results = list(classify(model, paths, PREPROCESS, CLASSES, "cpu", batch_size=2, topk=2))
    assert [result["path"] for result in results] == paths
    assert results[2] == {"path": paths[2], "error": f"{paths[2]}: not an image"}
    with torch.no_grad():
        expected = torch.softmax(model(torch.stack([load_input(path, PREPROCESS) for path in photos])), dim=1)
    for result, probabilities in zip(results[:2] + results[3:], expected):
        top = probabilities.topk(2)
        assert [entry["class"] for entry in result["top"]] == [CLASSES[i] for i in top.indices]
        assert result["class"] == result["top"][0]["class"]
        assert abs(result["probability"] - top.values[0].item()) < 1e-5


def test_a_photo_too_large_to_decode_is_an_error_in_place_among_its_batch(tmp_path):
    photos = [write_photo(tmp_path / f"{index}.jpg", index) for index in range(3)]
    paths = [photos[0], write_bomb(tmp_path / "huge.png"), *photos[1:]]
    results = list(classify(tiny_network(), paths, PREPROCESS, CLASSES, "cpu", batch_size=4, topk=1))
    assert [result["path"] for result in results] == paths
    assert results[1]["error"].startswith(f"{paths[1]}: image too large to decode safely")
    assert all("class" in result for result in results[:1] + results[2:])


def test_a_figure_may_replace_an_earlier_figure_only(tmp_path):
    photo = write_photo(tmp_path / "photos" / "a.jpg", 0)
    Image.new("RGB", (4, 4)).save(tmp_path / "earlier.png")
    check_figure_path(str(tmp_path / "earlier.png"), [str(tmp_path / "photos")], [photo])
    check_figure_path(str(tmp_path / "new" / "figure.png"), [str(tmp_path / "photos")], [photo])
    (tmp_path / "renamed.png").write_bytes(b"GIF89a not a png")
    with pytest.raises(UserError, match="renamed.png exists and is not a PNG"):
        check_figure_path(str(tmp_path / "renamed.png"), [photo], [photo])
    os.mkfifo(tmp_path / "pipe.png")  # never opened: that would wait for a writer
    with pytest.raises(UserError, match="pipe.png exists and is not a PNG"):
        check_figure_path(str(tmp_path / "pipe.png"), [photo], [photo])
    os.symlink(tmp_path / "photos" / "a.jpg", tmp_path / "link.png")
    with pytest.raises(UserError, match="link.png is one of the inputs"):
        check_figure_path(str(tmp_path / "link.png"), [photo], [photo])
