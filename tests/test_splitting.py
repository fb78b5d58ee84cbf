import json

from zfnet.data import scan_split
from zfnet.splitting import SAMPLE_DIR, split_class, split_sample


def test_split_sample_splits_the_bundled_sample_as_split_data_does_by_default(tmp_path):
    dest = split_sample(tmp_path / "data")
    classes, samples = scan_split(dest)
    assert classes == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert (len(samples["train"]), len(samples["val"])) == (55, 5)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert (manifest["dataset"], manifest["source"], manifest["seed"], manifest["val_ratio"]) == (
        "bundled sample",
        str(SAMPLE_DIR),
        0,
        0.1,
    )
    assert manifest["skipped"] == [{"file": "LICENSE.txt", "reason": "not an image"}]


def test_split_class_keeps_identical_photos_together_and_one_photo_in_train():
    names = [f"{i}.jpg" for i in range(10)]
    sha256s = {f"c/{name}": name for name in names} | {"c/0.jpg": "twin", "c/9.jpg": "twin"}
    for seed in range(5):
        train, val = split_class("c", names, sha256s, 0.3, seed)
        assert sorted(train + val) == names and train == sorted(train) and val == sorted(val)
        assert ("0.jpg" in val) == ("9.jpg" in val)
        assert len(val) in (3, 4)  # 3 photos, or a unit of two that crosses the target
    assert split_class("c", ["only.jpg"], {"c/only.jpg": "x"}, 0.5, 0) == (["only.jpg"], [])
