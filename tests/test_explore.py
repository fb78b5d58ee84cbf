"""explore.py: the site it builds from a tiny network, checked as files (the top 9 against a
brute-force search, the cache, the errors, the output folder) and in a real browser (headless
Chromium through Selenium: every page loads without a console error, every link and picture
resolves, and a reader can click from the overview to a map, to one of its photos and back).

The browser tests need Chromium and its driver (Debian: apt-get install chromium
chromium-driver) and the selenium package; without them they fail, saying so.
"""

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from urllib.parse import unquote, urlparse

import markupsafe
import pytest
import torch

import model as model_module
import zfnet.optimize
import zfnet.site.data
from tests.helpers import (
    CLASSES,
    ROOT,
    assert_one_line_error,
    call_script,
    flags_without_defaults,
    folder_contents,
    hide_progress_bars,
    run_script,
    save_network,
    tiny_network,
    write_photo,
    write_truncated_photo,
)
from zfnet.checkpoint import load_checkpoint, model_payload, save_checkpoint
from zfnet.images import load_input
from zfnet.outputs import MARKER
from zfnet.site.build import site_server
from zfnet.studies import sanity
from zfnet.top9 import strongest_activations, tensor_batches

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTHS = {"conv_channels": (4, 6, 6, 5, 4), "fc_features": (16, 16)}  # few maps: few pages to visit
SIZE = 64
PHOTOS_PER_CLASS = 3
OPTIMISED = ("--optimize", "2")  # the built site's: its 2 most active maps per layer get a picture


def write_run(folder):
    """A run folder as train.py leaves it (best.pth, last.pth with its settings, curves and
    confusion figures, two snapshots) and another tool's figure in it."""
    run = folder / "run"
    network = tiny_network(SIZE, **WIDTHS)
    best = save_network(run / "best.pth", network, epoch=3)
    payload = model_payload(network, CLASSES, {"input_size": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}, 3)
    save_checkpoint({**payload, "train_config": {"recipe": "fast", "lr": 4e-4, "epochs": 3}}, str(run / "last.pth"))
    for epoch in (1, 2):
        save_network(
            run / "snapshots" / f"epoch_{epoch:03d}.pth", tiny_network(SIZE, seed=epoch, **WIDTHS), epoch=epoch
        )
    for name in ("curves.png", "confusion.png", "visualize/filters.png"):
        write_photo(run / name, seed=len(name), size=(60, 40))
    return best


def write_images(folder):
    return str(folder / "images"), [
        write_photo(folder / "images" / name / f"{name}{i}.jpg", seed=10 * k + i, size=(70 + 10 * i, 60))
        for k, name in enumerate(CLASSES)
        for i in range(PHOTOS_PER_CLASS)
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A site built with the defaults beside a tiny run's best.pth: (checkpoint, images, site folder, result)."""
    folder = tmp_path_factory.mktemp("explore")
    checkpoint = write_run(folder)
    images, _ = write_images(folder)
    result = explore(checkpoint, images, *OPTIMISED)
    assert result.returncode == 0, result.stderr
    return checkpoint, images, os.path.join(os.path.dirname(checkpoint), "explore"), result


def copy_of_built(built, folder):
    """The built run (checkpoint, snapshots, site) copied into `folder`, as (checkpoint, its
    site): the copy's builds start warm from the built site's cache (the photos are the same),
    so a test pays only for what it changes."""
    run = shutil.copytree(os.path.dirname(built[0]), folder / "run")
    return str(run / "best.pth"), run / "explore"


def explore(checkpoint, images, *arguments):
    """explore.py on the CPU, for the network `checkpoint` over the photos `images`, with no
    optimised pictures unless --optimize is given (each takes a few seconds)."""
    quick = () if "--optimize" in arguments else ("--optimize", "0")
    return call_script(
        "explore.py", "--checkpoint", checkpoint, "--images", images, "--device", "cpu", *quick, *arguments
    )


def pages_of(site):
    return sorted(
        os.path.relpath(os.path.join(root, name), site)
        for root, _, names in os.walk(site)
        for name in names
        if name.endswith(".html")
    )


def test_the_site_has_every_page(built):
    checkpoint, images, site, result = built
    expected = [
        "evolution.html",
        "index.html",
        "sanity.html",
        *(f"layer{n}.html" for n in range(1, 6)),
        *(f"layer{n}/map{m:03d}.html" for n in range(1, 6) for m in range(WIDTHS["conv_channels"][n - 1])),
        *(f"photo/{name}-{name}{i}.html" for name in CLASSES for i in range(PHOTOS_PER_CLASS)),
    ]
    assert pages_of(site) == sorted(expected)
    for name in ("style.css", "cache.pt", "curves.png", "confusion.png", "img/filters.png", MARKER):
        assert os.path.isfile(os.path.join(site, name)), name
    assert f"{os.path.abspath(os.path.join(site, 'index.html'))}" in result.stdout
    index = open(os.path.join(site, "index.html")).read()
    assert "../visualize/filters.png" in index  # the other tools' figures are linked, not copied
    assert "fast" in index and "Accuracy on these photos" in index
    layer1 = open(os.path.join(site, "layer1.html")).read()
    assert "grey: none here, a filter that faded away" in layer1  # a fresh network's filters all live
    # A random network's layer 1 is at noise level, and every page says so.
    for page in ("index.html", "layer1.html", "layer5/map002.html", "sanity.html"):
        assert "layer 1 is still near noise level (smoothness " in open(os.path.join(site, page)).read(), page
    # Nothing is fetched from elsewhere: no CDN, no web fonts, no scripts.
    for page in pages_of(site):
        text = open(os.path.join(site, page)).read()
        assert "http://" not in text and "https://" not in text and "<script" not in text, page


def test_every_text_is_escaped(tmp_path):
    hostile = "<script>\"'&"
    classes = [hostile, "<b>a&b</b>"]
    checkpoint = save_network(
        tmp_path / "run" / "best.pth", tiny_network(SIZE, classes=classes, **WIDTHS), classes=classes
    )
    write_photo(tmp_path / "images" / "<i>x.jpg", seed=1)
    result = explore(checkpoint, tmp_path / "images")
    assert result.returncode == 0, result.stderr
    site = tmp_path / "run" / "explore"
    for page in pages_of(site):
        text = (site / page).read_text()
        assert "<script" not in text and "<b>a&b" not in text and "<i>x" not in text, page
    index = (site / "index.html").read_text()
    assert "&lt;script&gt;&#34;&#39;&amp;" in index and "&lt;b&gt;a&amp;b&lt;/b&gt;" in index


def test_with_fewer_photos_than_a_top_9_the_pages_count_the_top_they_have(tmp_path):
    checkpoint = save_network(tmp_path / "run" / "best.pth", tiny_network(SIZE, **WIDTHS))
    for i, name in enumerate(CLASSES):
        write_photo(tmp_path / "images" / name / f"{name}.jpg", seed=i)
    result = explore(checkpoint, tmp_path / "images", "--photos", "0")
    assert result.returncode == 0, result.stderr
    site = tmp_path / "run" / "explore"
    top = len(CLASSES)
    layer = (site / "layer1.html").read_text()
    assert f"the mean of its top-{top} activations" in layer and f"top-{top} mean" in layer and "top-9" not in layer
    assert f"<th>in the top {top}</th>" in (site / "layer1" / "map000.html").read_text()
    # A map silent on a photo still lists it, at a place of no meaning: its card says so.
    survey = torch.load(site / "cache.pt", weights_only=True)["survey"]
    silent = {
        (n, m): int((values[m] <= 0).sum()) for n, (values, *_) in survey["top"].items() for m in range(len(values))
    }
    assert sum(silent.values()) > 0
    for (n, m), count in silent.items():
        assert (site / f"layer{n}" / f"map{m:03d}.html").read_text().count("silent on this photo") == count, (n, m)
    maps = zfnet.site.data.SANITY_MAPS
    sanity_page = (site / "sanity.html").read_text()
    assert f"the top {top} activations of the {maps} most active maps of every layer ({top * maps * 5} " in sanity_page


def brute_force_top(model, paths, preprocess, layer, k):
    """Every map's k strongest photos by trying every position of every photo, one photo at a
    time: (values, images, ys, xs), strongest first, equal values keeping the earlier photo and
    the first position in reading order."""
    best = []  # per photo: (maps,) values and (y, x)
    for path in paths:
        with torch.no_grad():
            maps = model.activations(load_input(path, preprocess)[None], [layer])[layer][0]
        channels, height, width = maps.shape
        values = torch.full((channels,), -1.0)
        places = torch.zeros(channels, 2, dtype=torch.long)
        for y in range(height):
            for x in range(width):
                better = maps[:, y, x] > values
                values[better] = maps[better, y, x]
                places[better] = torch.tensor([y, x])
        best.append((values, places))
    values = torch.stack([v for v, _ in best], 1)  # (maps, photos)
    order = values.sort(dim=1, descending=True, stable=True).indices[:, :k]
    places = torch.stack([p for _, p in best], 1)  # (maps, photos, 2)
    chosen = places.gather(1, order[:, :, None].expand(-1, -1, 2))
    return values.gather(1, order), order, chosen[..., 0], chosen[..., 1]


def test_the_top9_are_those_of_a_brute_force_search_and_of_strongest_activations(built):
    checkpoint, images, site, _ = built
    model, saved = load_checkpoint(checkpoint)
    survey = torch.load(os.path.join(site, "cache.pt"), weights_only=True)["survey"]
    paths = survey["paths"]
    inputs = torch.stack([load_input(path, saved["preprocess"]) for path in paths])
    reference = strongest_activations(model, tensor_batches(inputs, 4, "reference"), model.conv_layers, "cpu")
    for layer in model.conv_layers:
        values, images_found, ys, xs = survey["top"][layer]
        brute = brute_force_top(model, paths, saved["preprocess"], layer, 9)
        assert torch.allclose(values, brute[0], rtol=1e-5, atol=1e-6)
        for ours, theirs, strongest in zip((images_found, ys, xs), brute[1:], reference[layer][1:]):
            assert torch.equal(ours, theirs) and torch.equal(ours, strongest)


def test_a_map_page_shows_its_top9_with_their_photos(built):
    _, _, site, _ = built
    survey = torch.load(os.path.join(site, "cache.pt"), weights_only=True)["survey"]
    values, images, ys, xs = survey["top"][5]
    page = open(os.path.join(site, "layer5", "map002.html")).read()
    shown = re.findall(
        r"<b>(\d)\.</b> activation ([^<]+)<br>(?:<a [^>]+>)?([^<]+)(?:</a>)?<br>at \((\d+), (\d+)\)", page
    )
    assert len(shown) == 9
    for rank, (number, value, name, y, x) in enumerate(shown):
        assert int(number) == rank + 1 and float(value) == pytest.approx(values[2, rank].item(), rel=1e-2)
        assert name == os.path.basename(survey["paths"][images[2, rank]])
        assert (int(y), int(x)) == (ys[2, rank].item(), xs[2, rank].item())


def test_a_map_page_shows_each_rule_and_how_much_of_it_survives_random_weights(built):
    _, _, site, _ = built
    report = torch.load(os.path.join(site, "cache.pt"), weights_only=False)["sanity"]
    page = open(os.path.join(site, "layer5", "map002.html")).read()
    for rule in ("deconvnet", "guided", "gradient"):
        assert len(re.findall(rf'alt="{rule} \d"', page)) == 9
        last = [
            row
            for row in report["table"]
            if row["rule"] == rule and row["layer"] == 5 and row["reinitialised_down_to"] == "layer 1"
        ]
        assert f"{rule} {last[0]['spearman_mean']:.3g}" in page
    assert 'href="../sanity.html"' in page


def test_wiring_lists_the_maps_below_by_a_naive_sum_of_absolute_weights():
    model = tiny_network(SIZE, **WIDTHS)
    for layer, below_count in ((2, 4), (5, 5)):
        weight = model.stage(layer).conv.weight.detach()
        for m in range(weight.shape[0]):
            sums = [sum(abs(v) for v in weight[m, k].flatten().tolist()) for k in range(below_count)]
            expected = sorted(range(below_count), key=lambda k: -sums[k])[:3]
            wired = zfnet.site.data.wiring(model, layer, m, count=3)
            assert [k for k, _ in wired] == expected
            assert [share for _, share in wired] == pytest.approx([sums[k] / sum(sums) for k in expected])


def test_a_map_page_shows_what_it_wants_to_see_what_it_is_wired_to_and_how_it_grew(built):
    checkpoint, _, site, _ = built
    cache = torch.load(os.path.join(site, "cache.pt"), weights_only=False)
    model, _ = load_checkpoint(checkpoint, "cpu")
    rankings = {
        n: top[0].mean(1).sort(descending=True, stable=True).indices.tolist()
        for n, top in cache["survey"]["top"].items()
    }
    optimised = cache["optimised"]["found"]
    evolution = cache["evolution"]
    for n in range(1, 6):
        # The layer page's cards show the optimised pictures too, each with its activation's ratio.
        cards = re.findall(
            r'<a class="card map-card" href="layer\d/map(\d+)\.html">(.*?)</a>',
            open(os.path.join(site, f"layer{n}.html")).read(),
        )
        shown = {
            int(m): re.search(rf'src="img/layer{n}/wants{int(m):03d}\.jpg".*?optimised: ([\d.]+)×', card)
            for m, card in cards
        }
        assert len(shown) == WIDTHS["conv_channels"][n - 1]
        assert sorted(m for m, found in shown.items() if found) == sorted(rankings[n][:2])
        for m in rankings[n][:2]:
            found = optimised[(n, m)]
            assert float(shown[m].group(1)) == pytest.approx(found["optimised"] / found["strongest_photo"], abs=0.05)
        for m in range(WIDTHS["conv_channels"][n - 1]):
            page = open(os.path.join(site, f"layer{n}", f"map{m:03d}.html")).read()
            picture = os.path.join(site, "img", f"layer{n}", f"wants{m:03d}.jpg")
            if m in rankings[n][:2]:
                found = optimised[(n, m)]
                assert found["strongest_photo"] == cache["survey"]["top"][n][0][m, 0].item()
                assert f"Its strongest activation is {found['optimised']:.3g}" in page
                assert f'src="../img/layer{n}/wants{m:03d}.jpg"' in page and os.path.isfile(picture)
            else:
                assert "What it wants to see" not in page and not os.path.exists(picture)
            # Wired to: every map of the layer below (fewer than 8 here), strongest first.
            wired = re.findall(r'<figure><a href="\.\./layer(\d)/map(\d+)\.html">.*?<br>([\d.]+)%</figcaption>', page)
            if n == 1:
                assert "What it is wired to" not in page
                continue
            weight = model.stage(n).conv.weight.detach()[m].abs().sum(dim=(1, 2))
            expected = weight.sort(descending=True, stable=True).indices.tolist()
            assert [(int(layer), int(k)) for layer, k, _ in wired] == [(n - 1, k) for k in expected]
            assert [float(share) for _, _, share in wired] == pytest.approx(
                [100 * (weight[k] / weight.sum()).item() for k in expected], abs=0.05
            )
            # How it grew: its strongest activation and its filter's drift at each snapshot.
            values = re.findall(r"<small>([^<]+)<br>filter (\d+)%, layer (\d+)%</small>", page)
            assert len(values) == len(evolution["epochs"]) == 2
            for s, (value, own, layer) in enumerate(values):
                assert float(value) == pytest.approx(evolution["found"][n][m, s, 3].item(), rel=1e-2)
                assert int(own) == round(100 * evolution["drift"][n][1][m, s].item())
                assert int(layer) == round(100 * evolution["drift"][n][0][s])
            first, last = (
                torch.load(
                    os.path.join(os.path.dirname(checkpoint), "snapshots", f"epoch_{e:03d}.pth"), weights_only=False
                )["model"][f"layer{n}.conv.weight"][m]
                for e in (1, 2)
            )
            assert int(values[1][1]) == round(100 * ((last - first).norm() / first.norm()).item())


def test_fewer_optimised_maps_prune_the_pictures_of_the_others(built, tmp_path):
    _, images, _, _ = built
    checkpoint, out = copy_of_built(built, tmp_path)
    assert len(list(out.glob("img/layer*/wants*.jpg"))) == 10  # the built site's --optimize 2
    assert explore(checkpoint, images, "--optimize", "1").returncode == 0
    assert len(list(out.glob("img/layer*/wants*.jpg"))) == 5
    assert explore(checkpoint, images, "--optimize", "0").returncode == 0
    assert not list(out.glob("img/layer*/wants*.jpg"))
    assert "What it wants to see" not in "".join(path.read_text() for path in out.glob("layer*/map*.html"))


def test_the_sanity_page_quotes_the_measured_numbers(built):
    _, _, site, _ = built
    cache = torch.load(os.path.join(site, "cache.pt"), weights_only=False)
    report = cache["sanity"]
    page = open(os.path.join(site, "sanity.html")).read()
    per_map = cache["survey"]["top"][1][0].shape[1]
    assert f"a map's {per_map} alike" in page and f"of its {per_map} photos" in page and "nine" not in page
    assert report["steps"] == [
        "classifier",
        "layer 7",
        "layer 6",
        "layer 5",
        "layer 4",
        "layer 3",
        "layer 2",
        "layer 1",
    ]
    for verdicts in report["verdicts"].values():
        for sentence in verdicts.values():
            assert str(markupsafe.escape(sentence)) in page
    for layer, choice in report["recommended"].items():
        assert f"layer {layer}: use {choice['rule']}" in page
    for name in ("img/sanity.png", "img/sanity_example.png"):
        assert f'src="{name}"' in page and os.path.getsize(os.path.join(site, name)) > 5000


def test_a_cached_sanity_report_of_an_older_format_is_measured_again(built, tmp_path):
    """A report cached by an older explorer may word its verdicts otherwise: measured again."""
    checkpoint, images, site, _ = built
    run = tmp_path / "run"
    shutil.copytree(os.path.dirname(checkpoint), run)
    cache_path = run / "explore" / "cache.pt"
    cache = torch.load(cache_path, weights_only=False)
    current = cache["sanity"]
    cache["sanity"] = {**current, "format": sanity.FORMAT - 1, "verdicts": {"deconvnet": {"1": "an old verdict"}}}
    torch.save(cache, cache_path)
    result = explore(str(run / "best.pth"), images, *OPTIMISED)
    assert result.returncode == 0, result.stderr
    again = torch.load(cache_path, weights_only=False)["sanity"]
    assert again["format"] == sanity.FORMAT and again["verdicts"] == current["verdicts"]
    assert "an old verdict" not in (run / "explore" / "sanity.html").read_text()


def test_a_rerun_reuses_everything_and_runs_no_network(built, monkeypatch):
    checkpoint, images, site, _ = built
    pictures = {  # and the pages: a rebuild that changes nothing rewrites no file
        os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
        for root, _, names in os.walk(site)
        for name in names
        if name not in ("cache.pt", MARKER)
    }

    def refuse(*args, **kwargs):
        raise AssertionError("a re-run ran the network")

    for name in ("forward", "stages_forward", "activations"):
        monkeypatch.setattr(model_module.ZFNet, name, refuse)
    monkeypatch.setattr(zfnet.site.data, "survey", refuse)
    monkeypatch.setattr(zfnet.optimize, "optimise", refuse)
    result = explore(checkpoint, images, *OPTIMISED)
    assert result.returncode == 0, result.stderr
    assert {path: os.stat(path).st_mtime_ns for path in pictures} == pictures


def test_a_rerun_does_without_importing_torchvision(built):
    checkpoint, images, _, _ = built
    code = (
        "import runpy, sys; sys.argv = ['explore.py', *sys.argv[1:]]; "
        "runpy.run_path('explore.py', run_name='__main__'); "
        "print('torchvision' in sys.modules)"
    )
    arguments = ["--checkpoint", checkpoint, "--images", images, "--device", "cpu", *OPTIMISED]
    result = subprocess.run(
        [sys.executable, "-c", code, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.stdout.splitlines()[-1] == "False", result.stderr


def test_missing_pictures_are_made_again_and_another_checkpoint_starts_afresh(built, tmp_path):
    _, images, _, _ = built
    checkpoint, site = copy_of_built(built, tmp_path)
    # No optimised pictures: they are not what this test is about, and each costs seconds.
    run = ("--checkpoint", checkpoint, "--images", images, "--device", "cpu")
    arguments = (*run, "--photos", "2", "--fresh", "--optimize", "0")  # 2 of the built site's 9 pages
    assert call_script("explore.py", *arguments).returncode == 0
    photo_pictures = sorted((site / "img" / "photo").iterdir())
    assert len(photo_pictures) == 2
    deleted = [site / "img" / "layer3" / "rules001.jpg", photo_pictures[0] / "layer2.jpg"]
    earlier = site / "img" / "layer3" / "map001.jpg"  # a sheet of an earlier version, one row per kind fewer
    earlier.write_bytes(b"old")
    for path in deleted:
        path.unlink()
    assert call_script("explore.py", *arguments).returncode == 0
    assert all(path.exists() for path in deleted) and not earlier.exists()

    save_network(checkpoint, tiny_network(SIZE, seed=5, **{**WIDTHS, "conv_channels": (4, 6, 6, 5, 3)}))
    assert call_script("explore.py", *arguments).returncode == 0
    assert not (site / "layer5" / "map003.html").exists() and not (site / "img" / "layer5" / "rules003.jpg").exists()
    assert (site / "layer5" / "map002.html").exists()


def test_photos_by_count_and_by_name(built, tmp_path):
    _, images, _, _ = built
    checkpoint, out = copy_of_built(built, tmp_path)
    loose = write_photo(tmp_path / "loose.png", seed=3, size=(50, 80))
    inside = os.path.join(images, "roses", "roses1.jpg")
    result = explore(checkpoint, images, *OPTIMISED, "--photos", loose, inside, "--fresh")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out / "photo")) == ["loose.html", "roses-roses1.html"]
    assert "the class the network predicts" in (out / "photo" / "loose.html").read_text()
    assert "the class of its folder" in (out / "photo" / "roses-roses1.html").read_text()
    added = write_photo(tmp_path / "added.png", seed=4, size=(60, 60))
    result = explore(checkpoint, images, *OPTIMISED, "--photos", added)  # adds its page to the two
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out / "photo")) == ["added.html", "loose.html", "roses-roses1.html"]
    assert "roses-roses1.html" in (out / "photo" / "added.html").read_text()  # the page before it, kept
    result = explore(checkpoint, images, *OPTIMISED, "--photos", "2", "--fresh")
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(out / "photo")) == 2 and len(os.listdir(out / "img" / "photo")) == 2


def test_photos_with_the_longest_file_names_get_pages_of_their_own(built, tmp_path):
    checkpoint, _, _, _ = built
    images, _ = write_images(tmp_path)
    # 250 bytes each, alike but for their last letters: their ids must be short and differ.
    long_names = [
        write_photo(os.path.join(images, "daisy", "a" * 244 + f"{end}.jpg"), seed=i) for i, end in enumerate("xy")
    ]
    result = explore(checkpoint, images, "--out", tmp_path / "site", "--photos", *long_names)
    assert result.returncode == 0, result.stderr
    pages = sorted(os.listdir(tmp_path / "site" / "photo"))
    assert len(pages) == 2 and all(len(page) <= 110 for page in pages) and pages[0] != pages[1]


def test_a_photo_that_cannot_be_decoded_is_skipped_with_a_note(built, tmp_path):
    checkpoint, _, _, _ = built
    images, _ = write_images(tmp_path)
    broken = write_truncated_photo(os.path.join(images, "daisy", "broken.jpg"))
    result = explore(checkpoint, images, "--out", tmp_path / "site", "--photos", "1")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: skipped")]
    assert len(notes) == 1 and broken in notes[0]
    assert "1 could not be decoded" in (tmp_path / "site" / "index.html").read_text()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--checkpoint", "missing.pth"], "checkpoint not found"),
        (["--images", "no/such/folder"], "image folder not found"),
        (["--photos", "no/such/photo.jpg"], "no/such/photo.jpg: no such file"),
        (["--photos"], "expected at least one argument"),
        (["--batch-size", "0"], "must be at least 1"),
        (["--port", "-1"], "must not be negative"),
    ],
)
def test_bad_input_is_one_line(built, tmp_path, arguments, message):
    checkpoint, images, _, _ = built
    defaults = ["--checkpoint", checkpoint, "--images", images, "--out", tmp_path / "site", "--device", "cpu"]
    result = run_script("explore.py", *defaults, *arguments)
    assert_one_line_error(result, message)
    assert not (tmp_path / "site").exists()


def test_no_usable_photo_is_one_line(built, tmp_path, monkeypatch):
    checkpoint, _, _, _ = built
    hide_progress_bars(monkeypatch)
    write_truncated_photo(tmp_path / "images" / "a.jpg")
    result = explore(checkpoint, tmp_path / "images", "--out", tmp_path / "site")
    assert_one_line_error(result, "none of the 1 photos")


def test_help_shows_every_default():
    result = call_script("explore.py", "--help")
    assert result.returncode == 0 and flags_without_defaults(result.stdout) == []


def test_a_folder_of_the_users_files_is_refused_and_untouched(built, tmp_path):
    checkpoint, images, _, _ = built
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("chapter 1")
    before = folder_contents(tmp_path / "mine")
    result = run_script("explore.py", "--checkpoint", checkpoint, "--images", images, "--out", tmp_path / "mine")
    assert_one_line_error(result, "already holds files that zfnet did not write")
    assert folder_contents(tmp_path / "mine") == before


def test_out_inside_the_photos_or_as_a_file_is_refused(built, tmp_path):
    checkpoint, images, _, _ = built
    inside = run_script(
        "explore.py", "--checkpoint", checkpoint, "--images", images, "--out", os.path.join(images, "site")
    )
    assert_one_line_error(inside, "is within --images")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(
        run_script("explore.py", "--checkpoint", checkpoint, "--images", images, "--out", tmp_path / "file"),
        "is a file, not a folder",
    )


def test_a_site_folder_from_before_the_marker_is_taken_back(built, tmp_path):
    checkpoint, images, _, _ = built
    old = tmp_path / "old"
    (old / "img").mkdir(parents=True)
    (old / "index.html").write_text("<p>old</p>")
    (old / "layer1.html").write_text("<p>old</p>")
    result = explore(checkpoint, images, "--out", old, "--photos", "0")
    assert result.returncode == 0, result.stderr
    assert (old / MARKER).exists() and "old" not in (old / "index.html").read_text()


def test_serve_serves_the_site_on_localhost_until_interrupted(built):
    checkpoint, images, _, _ = built
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "explore.py"),
            "--checkpoint",
            checkpoint,
            "--images",
            images,
            "--device",
            "cpu",
            *OPTIMISED,  # the built site's own settings: a warm rebuild, then the server
            "--serve",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # Started as a terminal starts it: a shell's background jobs inherit Ctrl-C ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in process.stdout:
            if line.startswith("serving on "):
                break
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/explore/index.html")
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"ZFNet explorer" in response.read()
        with urllib.request.urlopen(url.replace("explore/index.html", "visualize/filters.png"), timeout=30) as response:
            assert response.status == 200  # the run folder is served: the links to other tools work
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()  # never leave a server behind
            raise
    assert process.returncode == 0, err
    assert "stopped" in out


def test_the_server_answers_for_the_site_only_and_bad_requests_in_one_status(built, tmp_path):
    _, _, site, _ = built
    secret = tmp_path / "secret.txt"
    secret.write_text("not the site's")
    link = os.path.join(site, "secret.html")
    os.symlink(secret, link)
    server, address = site_server(site, 0, site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address
    try:
        statuses = {}
        for path in ("/index.html", "/secret.html", "/%00", "/../../secret.txt", "/a%00b.html"):
            connection = http.client.HTTPConnection(host, port, timeout=30)
            connection.request("GET", path)
            response = connection.getresponse()
            statuses[path] = response.status
            body = response.read()
            connection.close()
            assert b"not the site's" not in body, path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
        os.unlink(link)
    assert address == f"http://127.0.0.1:{port}/index.html"
    assert statuses == {
        "/index.html": 200,
        "/secret.html": 404,
        "/%00": 400,
        "/../../secret.txt": 404,
        "/a%00b.html": 400,
    }


# In a real browser.


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.fail(
            f"the browser tests need Chromium and chromedriver ({', '.join(missing)} missing): "
            f"apt-get install -y chromium chromium-driver",
            pytrace=False,
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser tests need selenium: pip install -r requirements-dev.txt", pytrace=False)
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def local_file(url):
    parsed = urlparse(url)
    assert parsed.scheme == "file", f"a link leaves the computer: {url}"
    return unquote(parsed.path)


def test_every_page_loads_cleanly_with_every_link_and_picture(built, browser):
    _, _, site, _ = built
    from selenium.webdriver.common.by import By

    start = "file://" + os.path.abspath(os.path.join(site, "index.html"))
    queue, seen = [start], {start}
    while queue:
        url = queue.pop()
        browser.get(url)
        assert browser.find_element(By.TAG_NAME, "h1").text, url
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert errors == [], (url, errors)
        broken = browser.execute_script(
            "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
        assert broken == [], (url, broken)
        targets = browser.execute_script(
            "return [...document.querySelectorAll('a[href]')].map(a => a.href)"
            ".concat([...document.querySelectorAll('img[src], link[href]')].map(e => e.src || e.href))"
        )
        for target in targets:
            if target.startswith("data:"):
                continue
            path = local_file(target)
            assert os.path.isfile(path), (url, target)
            page = target.split("#")[0]
            if page.endswith(".html") and os.path.abspath(path).startswith(os.path.abspath(site)) and page not in seen:
                seen.add(page)
                queue.append(page)
    assert len(seen) == len(pages_of(site))  # every page is reachable from the overview


def test_a_reader_can_click_from_the_overview_to_a_map_and_its_photo_and_back(built, browser, tmp_path):
    _, _, site, _ = built
    from selenium.webdriver.common.by import By

    browser.get("file://" + os.path.abspath(os.path.join(site, "index.html")))
    browser.save_screenshot(str(tmp_path / "index.png"))
    browser.find_element(By.LINK_TEXT, "Layer 5").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Layer 5"
    browser.find_element(By.CSS_SELECTOR, "a.map-card").click()
    title = browser.find_element(By.TAG_NAME, "h1").text
    assert title.startswith("Layer 5, map ")
    browser.save_screenshot(str(tmp_path / "map.png"))
    photo = browser.find_element(By.CSS_SELECTOR, ".pair-figure figcaption a")
    name = photo.text
    photo.click()
    assert browser.find_element(By.TAG_NAME, "h1").text == name
    assert browser.find_elements(By.CSS_SELECTOR, 'a[href*="layer5/"]')
    browser.back()
    assert browser.find_element(By.TAG_NAME, "h1").text == title
    browser.find_element(By.PARTIAL_LINK_TEXT, "all ").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Layer 5"
    browser.find_element(By.CSS_SELECTOR, "a.brand").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    for shot in ("index.png", "map.png"):
        assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_with_class_names_shows_them_and_still_knows_its_folders(tmp_path):
    images, _ = write_images(tmp_path)
    network = tiny_network(SIZE, **WIDTHS)
    named = [name.upper() + " (readable)" for name in CLASSES]
    preprocess = {"input_size": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}
    checkpoint = tmp_path / "named" / "best.pth"
    save_checkpoint(model_payload(network, CLASSES, preprocess, 1, class_names=named), str(checkpoint))
    result = explore(checkpoint, images, "--photos", "1")
    assert result.returncode == 0, result.stderr
    site = tmp_path / "named" / "explore"
    index = (site / "index.html").read_text()
    assert ", ".join(named) in index
    (page,) = (site / "photo").iterdir()
    text = page.read_text()
    assert "the class of its folder" in text  # the photo's folder matched the run's folder names
    assert any(name in text for name in named) and not any(f">{name}<" in text for name in CLASSES)
