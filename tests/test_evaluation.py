import torch

from tests.helpers import PREPROCESS, tiny_network, write_photos
from zfnet.evaluation import PhotoViews, evaluate_folder, labelled_photos, square_side, views
from zfnet.images import load_input, normalize

CLASSES = [f"class{index}" for index in range(7)]


def test_the_ten_crops_are_the_corners_and_centre_then_the_same_mirrored():
    squares = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    inputs = views(whole, squares, PREPROCESS)
    assert square_side(224) == 256
    for flipped, source in ((0, squares), (5, squares.flip(-1))):
        boxes = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]  # top-left, top-right, bottom-left, bottom-right, centre
        for number, (top, left) in enumerate(boxes):
            crop = source[:, :, top : top + 224, left : left + 224]
            expected = normalize(crop, PREPROCESS["mean"], PREPROCESS["std"])
            assert torch.equal(inputs["10 crops"][:, flipped + number], expected)
    assert torch.equal(inputs["centre"][:, 0], inputs["10 crops"][:, 4])
    assert torch.equal(inputs["whole"][:, 0], normalize(whole, PREPROCESS["mean"], PREPROCESS["std"]))


def test_errors_match_a_naive_loop_over_photos_and_crops(tmp_path):
    folder = tmp_path / "val"
    for index, name in enumerate(CLASSES):
        write_photos(folder / name, (30 * index, 200 - 25 * index, 90), 2, seed=index, size=(70, 50))
    model = tiny_network(classes=CLASSES)
    samples = labelled_photos(folder, CLASSES)
    right, counted, errors = evaluate_folder(model, samples, PREPROCESS, "cpu", batch_size=3, workers=0)
    assert counted == 14 and errors == []

    naive = {view: [0, 0] for view in right}
    dataset = PhotoViews(samples, 224)
    with torch.no_grad():
        for index, (path, label) in enumerate(samples):
            whole, square, _, _ = dataset[index]
            assert torch.equal(normalize(whole, PREPROCESS["mean"], PREPROCESS["std"]), load_input(path, PREPROCESS))
            for view, inputs in views(whole[None], square[None], PREPROCESS).items():
                probabilities = sum(torch.softmax(model(crop[None]), dim=1)[0] for crop in inputs[0]) / len(inputs[0])
                ranked = sorted(range(len(CLASSES)), key=lambda c: -float(probabilities[c]))
                naive[view][0] += ranked[0] == label
                naive[view][1] += label in ranked[:5]
    assert right == naive
    assert any(top1 < top5 < 14 for top1, top5 in right.values())  # the counts tell views and ranks apart


def test_a_photo_that_cannot_be_used_is_left_out_and_named(tmp_path, capsys):
    folder = tmp_path / "val"
    write_photos(folder / "class0", (200, 40, 40), 3, seed=0)
    (folder / "class0" / "001.jpg").write_text("oops")
    right, counted, errors = evaluate_folder(
        tiny_network(classes=CLASSES), labelled_photos(folder, CLASSES), PREPROCESS, "cpu", 2, 0
    )
    assert counted == 2 and len(errors) == 1 and "001.jpg: not an image" in errors[0]
    assert "note: skipped" in capsys.readouterr().err
