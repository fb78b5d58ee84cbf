"""The explorer's pages: plain HTML written from Python f-strings, a function per kind of page,
one style sheet (style.css beside this module), no JavaScript. Every text is escaped with
html.escape, and every page links back to the overview (index.html).

    index.html              the run, its accuracy per class, the architecture, the photos
    layerN.html             every map of layer N as a card, strongest first
    layerN/mapNNN.html      one map: its top 9 (figure 2), the classes that drive it
    photo/ID.html           one photo: prediction, occlusion (figure 7), projections
    evolution.html          figure 4, from the run's snapshots
"""

import functools
import math
import os
from dataclasses import dataclass, field
from html import escape
from urllib.parse import quote

import torch
from tqdm import tqdm

from zfnet.deconv import receptive_fields
from zfnet.files import atomic_write_text
from zfnet.site.data import METHODS, TOP, architecture, class_means
from zfnet.site.pictures import Sheet, css_colours
from zfnet.top9 import pil_box

STYLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "style.css")
NORMALISATION = (
    "Projections are contrast-stretched one by one (zfnet.figures.stretched): grey is zero, and the "
    "99th percentile of each projection's non-zero magnitudes reaches black or white."
)
METHOD_NAMES = {"deconvnet": "deconvnet", "guided": "guided backpropagation", "gradient": "gradient"}
METHOD_NOTES = {
    "deconvnet": "Zeiler & Fergus's deconvnet: each ReLU passes back the positive part of the signal",
    "guided": "Springenberg et al.: the deconvnet's rule, and only where the forward pass was positive",
    "gradient": "the plain gradient of the activation with respect to the input",
}


@dataclass
class Site:
    """Everything the pages show; zfnet.site.build fills it in."""

    folder: str
    checkpoint: str
    images: str
    classes: list
    preprocess: dict
    model: object
    survey: dict
    labels: object  # each survey photo's class index, or None when --images is not a class-folder tree
    sheets: dict = field(default_factory=dict)  # {layer: Sheet}
    ids: dict = field(default_factory=dict)  # {photo path: id}
    photos: list = field(default_factory=list)  # [(path, id, cached numbers)] with a page each
    evolution: dict = None
    checkpoint_info: dict = None
    train_config: dict = None
    figures: list = field(default_factory=list)
    smoothness: tuple = None  # layer 1's share of filter energy below 1/4 cycle/px, and white noise's
    faded: int = 0  # layer-1 filters whose weights faded away (zfnet.spectra.faded_filters)
    tools: dict = field(default_factory=dict)  # {tool: [PNG paths]}
    filters: str = "img/filters.png"

    # Where the pictures lie, relative to the site's folder.
    @staticmethod
    def map_sheet(layer, m):
        return f"img/layer{layer}/map{m:03d}.jpg"

    def photo_files(self, photo):
        return [
            f"img/photo/{photo}/{name}"
            for name in ("whole.jpg", *(f"layer{n}.jpg" for n in self.model.conv_layers), "a.png", "b.png", "c.png")
        ]

    @staticmethod
    def thumbnail(photo):
        return f"img/thumb/{photo}.jpg"

    @staticmethod
    def evolution_sheet(layer):
        return f"img/evolution/layer{layer}.jpg"

    @functools.cached_property
    def predictions(self):
        return self.survey["probabilities"].argmax(1)

    @functools.cached_property
    def groups(self):
        """Each survey photo's class for the per-class means: its true class where known."""
        return self.labels if self.labels is not None else self.predictions

    @property
    def group_name(self):
        return "class" if self.labels is not None else "predicted class"

    def misclassified(self):
        return [] if self.labels is None else (self.predictions != self.labels).nonzero().flatten().tolist()

    @functools.cached_property
    def rankings(self):
        """`{layer: its maps, most active first}`, by the mean of their top-9 activations."""
        return {
            n: top[0].mean(1).sort(descending=True, stable=True).indices.tolist()
            for n, top in self.survey["top"].items()
        }

    @functools.cached_property
    def means(self):
        """`{layer: (maps, classes)}`, each map's mean strongest activation per class."""
        return {n: class_means(values, self.groups, len(self.classes)) for n, values in self.survey["values"].items()}

    @functools.cached_property
    def fields(self):
        return receptive_fields(self.model)

    @functools.cached_property
    def map_sides(self):
        """`{layer: side of its feature maps}`."""
        return {
            layer: shape[1]
            for layer, operation, _, shape, _, _ in architecture(self.model, self.preprocess["input_size"])
            if operation.startswith("convolution")
        }

    @functools.cached_property
    def colours(self):
        return css_colours("tab10", [i % 10 for i in range(len(self.classes))])

    @functools.cached_property
    def pages(self):
        """`{photo path: page}` of the photos with a page."""
        return {path: f"photo/{photo}.html" for path, photo, _ in self.photos}


def write_site(site, out):
    """Write style.css and every page into the claimed folder `out`."""
    with open(STYLE) as file:
        atomic_write_text(out.path("style.css"), file.read())
    photo_pages = set(site.pages.values())
    if os.path.isdir(out.path("photo")):
        for entry in os.scandir(out.path("photo")):  # pages of photos no longer shown
            if f"photo/{entry.name}" not in photo_pages:
                os.unlink(entry.path)
    layers = site.model.conv_layers
    jobs = [("index.html", lambda: overview(site))]
    jobs += [(f"layer{n}.html", functools.partial(layer_page, site, n)) for n in layers]
    jobs += [
        (f"layer{n}/map{m:03d}.html", functools.partial(map_page, site, n, m))
        for n in layers
        for m in range(len(site.rankings[n]))
    ]
    jobs += [(site.pages[path], functools.partial(photo_page, site, i)) for i, (path, _, _) in enumerate(site.photos)]
    if site.evolution:
        jobs.append(("evolution.html", lambda: evolution_page(site)))
    for name, make in tqdm(jobs, desc="writing the pages", unit="page", leave=False):
        atomic_write_text(out.path(name), make())


# Pieces shared by the pages.


def page(site, title, body, depth=0, current=None):
    """A whole page: the header with the links to every part, the title, the body."""
    root = "../" * depth
    parts = [("index.html", "Overview"), *((f"layer{n}.html", f"Layer {n}") for n in site.model.conv_layers)]
    if site.photos:
        parts.append(("index.html#photos", "Photos"))
    if site.evolution:
        parts.append(("evolution.html", "Evolution"))
    links = "".join(
        f'<a href="{root}{href}"{" aria-current=page" if href == current else ""}>{text}</a>' for href, text in parts
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · ZFNet explorer</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}style.css">
</head>
<body>
<header><a class="brand" href="{root}index.html">ZFNet explorer</a><nav>{links}</nav></header>
<main>
<h1>{escape(title)}</h1>
{body}
</main>
<footer>Made by explore.py from {escape(relative(site.checkpoint))} and the photos of {escape(relative(site.images))}.
<a href="{root}index.html">Back to the overview</a></footer>
</body>
</html>
"""


def relative(path):
    """A path as the user would type it from where the command ran."""
    return os.path.relpath(path)


def link(href, text):
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def number(value):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def tile(src, sheet, row, column, alt, depth):
    """A window onto one tile of a sheet (zfnet.site.pictures.Sheet)."""
    left, top = sheet.tile(row, column)
    return (
        f'<span class="tile" style="width:{sheet.side}px;height:{sheet.side}px">'
        f'<img src="{"../" * depth}{src}" alt="{escape(alt)}" style="left:-{left}px;top:-{top}px"></span>'
    )


def class_bars(site, means, title):
    """A small bar per class, the tallest the map's largest class mean."""
    values = [value for value in means.tolist() if not math.isnan(value)]
    peak = max(values, default=0) or 1.0
    bars = "".join(
        f'<span style="height:{0 if math.isnan(v) else max(2, round(100 * v / peak))}%;'
        f'background:{colour}" title="{escape(name)}: {number(v)}"></span>'
        for v, colour, name in zip(means.tolist(), site.colours, site.classes)
    )
    return f'<span class="bars" role="img" aria-label="{escape(title)}">{bars}</span>'


def legend(site):
    items = "".join(
        f'<li><i style="background:{colour}"></i>{escape(name)}</li>'
        for name, colour in zip(site.classes, site.colours)
    )
    return f'<ul class="legend">{items}</ul>'


def bar_row(name, value, colour, text=None):
    """A table row: a name, a bar of `value` (0 to 1) and its text."""
    return (
        f'<tr><th scope="row">{escape(name)}</th><td class="meter"><span style="width:{100 * value:.1f}%;'
        f'background:{colour}"></span></td><td class="num">{escape(text or f"{value:.1%}")}</td></tr>'
    )


def photo_link(site, path, depth, text=None):
    """The photo's name, linking to its page when it has one."""
    text = text or os.path.basename(path)
    page = site.pages.get(path)
    return link("../" * depth + page, text) if page else escape(text)


# The overview.


def readable_setting(value):
    """A training setting as text: a recipe's settings as `name value` pairs, not a dict."""
    if isinstance(value, dict):
        return " · ".join(f"{name.replace('_', ' ')} {setting}" for name, setting in value.items())
    return value


def overview(site):
    info, config = site.checkpoint_info, site.model.config
    accuracy = info.get("val_accuracy")
    rows = [
        ("checkpoint", relative(site.checkpoint)),
        ("epochs trained", info.get("epoch")),
        ("validation accuracy (train.py)", None if accuracy is None else f"{accuracy:.1%}"),
        ("network", f"{config['arch']}, {config['width']} width, input {config['input_size']} px"),
        ("convolutional maps", " / ".join(map(str, config["conv_channels"]))),
        ("fully connected", " / ".join(map(str, config["fc_features"]))),
        ("classes", ", ".join(site.classes)),
    ]
    if site.train_config:
        rows += [(name.replace("_", " "), readable_setting(value)) for name, value in site.train_config.items()]
    run = "".join(
        f"<tr><th scope=row>{escape(str(name))}</th><td>{escape(str(value))}</td></tr>"
        for name, value in rows
        if value is not None
    )
    settings = (
        "" if site.train_config else "<p class=note>No last.pth with the training settings beside the checkpoint.</p>"
    )
    figures = "".join(
        f'<figure><img src="{name}" alt="{escape(name)}"><figcaption>{escape(name)} (train.py)</figcaption></figure>'
        for name in site.figures
    )
    body = [
        f'<section><h2>The run</h2><table class="facts">{run}</table>{settings}'
        f'<div class="figures">{figures}</div></section>',
        accuracy_section(site),
        architecture_section(site),
        layers_section(site),
        photos_section(site),
        mistakes_section(site),
        tools_section(site),
    ]
    return page(site, "Overview", "\n".join(body), current="index.html")


def accuracy_section(site):
    photos = site.survey["paths"]
    skipped = site.survey["skipped"]
    note = f" ({len(skipped)} could not be decoded and were skipped)" if skipped else ""
    head = f"<p>{len(photos)} photos of {escape(relative(site.images))}{escape(note)}.</p>"
    if site.labels is None:
        return (
            f"<section><h2>On these photos</h2>{head}<p class=note>The photos do not all lie in class folders "
            f"named after the checkpoint's classes, so their accuracy is not known.</p></section>"
        )
    correct = site.predictions == site.labels
    rows = [
        bar_row(
            "all classes",
            correct.float().mean().item(),
            "#4a6fa5",
            f"{correct.float().mean().item():.1%} of {len(correct)}",
        )
    ]
    for k, (name, colour) in enumerate(zip(site.classes, site.colours)):
        mine = site.labels == k
        if mine.any():
            share = correct[mine].float().mean().item()
            rows.append(bar_row(name, share, colour, f"{share:.1%} of {int(mine.sum())}"))
    return f'<section><h2>Accuracy on these photos</h2>{head}<table class="meters">{"".join(rows)}</table></section>'


def architecture_section(site):
    rows = []
    for layer, operation, geometry, shape, receptive, parameters in architecture(
        site.model, site.preprocess["input_size"]
    ):
        name = (
            link(f"layer{layer}.html", f"layer {layer}")
            if layer in site.model.conv_layers
            else (f"layer {layer}" if layer in site.model.fc_layers else escape(layer))
        )
        kernel = "" if geometry is None else "{0}×{0}, stride {1}, padding {2}".format(*geometry)
        output = " × ".join(map(str, shape))
        field = "" if receptive is None else f"{receptive[0]}×{receptive[0]} px, every {receptive[1]} px"
        rows.append(
            f"<tr><td>{name}</td><td>{escape(operation)}</td><td>{kernel}</td><td>{output}</td>"
            f"<td>{field}</td><td class=num>{parameters:,}</td></tr>"
        )
    total = sum(p.numel() for p in site.model.parameters())
    return (
        f'<section><h2>Architecture</h2><table class="grid"><thead><tr><th>layer</th><th>operation</th>'
        f"<th>kernel</th><th>output</th><th>receptive field</th><th>parameters</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody><tfoot><tr><td colspan=5>total</td><td class=num>{total:,}</td></tr>"
        f"</tfoot></table></section>"
    )


def layers_section(site):
    cards = []
    for n in site.model.conv_layers:
        best = site.rankings[n][0]
        sheet = site.sheets[n]
        cards.append(
            f'<a class="card layer-card" href="layer{n}.html"><strong>Layer {n}</strong>'
            f'<span class="pair">{tile(site.map_sheet(n, best), sheet, 0, 0, "", 0)}'
            f"{tile(site.map_sheet(n, best), sheet, 1, 0, '', 0)}</span>"
            f"<small>{len(site.rankings[n])} maps, receptive field {sheet.size} px</small></a>"
        )
    evolution = (
        '<p><a href="evolution.html">How the features developed over training (figure 4)</a></p>'
        if site.evolution
        else ""
    )
    return (
        f"<section><h2>The layers</h2><p>Each layer's most active map, its strongest activation projected by "
        f"the deconvnet beside the image patch it sees.</p>"
        f'<div class="cards" style="--card:{2 * max(s.side for s in site.sheets.values()) + 40}px">'
        f"{''.join(cards)}</div>{evolution}</section>"
    )


def photo_card(site, path, depth=0):
    photo = site.ids[path]
    return (
        f'<img src="{"../" * depth}{site.thumbnail(photo)}" alt="{escape(os.path.basename(path))}" '
        f"width=112 height=112>"
    )


def photos_section(site):
    if not site.photos:
        return ""
    cards, index = [], {path: i for i, path in enumerate(site.survey["paths"])}
    for path, photo, entry in site.photos:
        predicted = site.classes[int(entry["probabilities"].argmax())]
        truth = (
            ""
            if site.labels is None or path not in index
            else (f"is <b>{escape(site.classes[int(site.labels[index[path]])])}</b>, ")
        )
        cards.append(
            f'<a class="card photo-card" href="photo/{photo}.html">{photo_card(site, path)}'
            f"<small>{escape(os.path.basename(path))}<br>{truth}predicted {escape(predicted)}</small></a>"
        )
    return (
        f'<section id="photos"><h2>Photo pages</h2><p>Each with its prediction, the occlusion maps of '
        f"figure 7, and the maps that respond most to it, projected three ways.</p>"
        f'<div class="cards">{"".join(cards)}</div></section>'
    )


def mistakes_section(site):
    wrong = site.misclassified()
    if site.labels is None:
        return ""
    if not wrong:
        return "<section><h2>Misclassified photos</h2><p>None: the network gets every photo right.</p></section>"
    cards = []
    for i in wrong:
        path = site.survey["paths"][i]
        top = site.survey["probabilities"][i].topk(min(3, len(site.classes)))
        guesses = "".join(
            f"<li>{escape(site.classes[k])} {p:.0%}</li>" for p, k in zip(top.values.tolist(), top.indices.tolist())
        )
        inner = (
            f"{photo_card(site, path)}<small>{escape(os.path.basename(path))}<br>is "
            f"<b>{escape(site.classes[int(site.labels[i])])}</b></small><ol>{guesses}</ol>"
        )
        page = site.pages.get(path)
        cards.append(
            f'<a class="card photo-card" href="{page}">{inner}</a>'
            if page
            else f'<div class="card photo-card">{inner}</div>'
        )
    return (
        f"<section><h2>Misclassified photos ({len(wrong)})</h2><p>Each with the network's three most probable "
        f"classes; those with a page of their own link to it.</p>"
        f'<div class="cards">{"".join(cards)}</div></section>'
    )


def tools_section(site):
    if not site.tools:
        return ""
    groups = []
    for tool, paths in site.tools.items():
        items = "".join(
            f'<li><a href="{quote(os.path.relpath(path, site.folder))}">{escape(os.path.basename(path))}</a></li>'
            for path in paths
        )
        groups.append(f"<h3>{escape(tool)}.py</h3><ul>{items}</ul>")
    return f"<section><h2>The other tools' figures for this run</h2>{''.join(groups)}</section>"


# A layer: all its maps.


def layer_page(site, n):
    sheet = site.sheets[n]
    means = site.means[n]
    strongest = site.survey["top"][n][0]
    cards = []
    for m in site.rankings[n]:
        cards.append(
            f'<a class="card map-card" href="layer{n}/map{m:03d}.html"><strong>map {m}</strong>'
            f'<span class="pair">{tile(site.map_sheet(n, m), sheet, 0, 0, f"map {m} projected", 0)}'
            f"{tile(site.map_sheet(n, m), sheet, 1, 0, f'map {m} patch', 0)}</span>"
            f"<small>top-9 mean {number(strongest[m].mean().item())}</small>"
            f"{class_bars(site, means[m], f'mean activation of map {m} per {site.group_name}')}</a>"
        )
    filters = ""
    if n == 1:
        ours, white = site.smoothness
        faded = f"the {site.faded} that faded away" if site.faded else "none here, a filter that faded away"
        filters = (
            f'<section><h2>The filters</h2><figure><img class="pixelated" src="{site.filters}" '
            f'alt="the layer-1 filters"><figcaption>Each filter stretched to its own range; grey: '
            f"{faded} (weights under a tenth of the median filter's).</figcaption>"
            f"</figure><p>Smoothness: <b>{ours:.1%}</b> of the filters' energy lies below 1/4 cycle per "
            f"pixel once each filter's mean per colour is removed (zfnet.spectra.smoothness); white-noise "
            f"filters would have "
            f"{white:.1%}.</p></section>"
        )
    body = (
        f"{filters}<section><h2>{len(cards)} feature maps, most active first</h2>"
        f"<p>Each card: the map's strongest activation over the photos, projected to pixels by the deconvnet, "
        f"beside the {sheet.size}×{sheet.size}-pixel patch it sees; the mean of its top-9 activations; and its "
        f"mean strongest activation on the photos of each {site.group_name}:</p>{legend(site)}"
        f'<p class="note">{NORMALISATION}</p>'
        f'<div class="cards" style="--card:{2 * sheet.side + 40}px">{"".join(cards)}</div></section>'
    )
    return page(site, f"Layer {n}", body, current=f"layer{n}.html")


# One map.


def map_page(site, n, m):
    sheet, count = site.sheets[n], len(site.rankings[n])
    values, images, ys, xs = (column[m] for column in site.survey["top"][n])
    kernel = site.model.stage(n).conv.kernel_size[0]
    side = site.map_sides[n]
    figures = []
    for r in range(len(images)):
        path = site.survey["paths"][images[r]]
        y, x = int(ys[r]), int(xs[r])
        figures.append(
            f'<figure class="pair-figure"><span class="pair">'
            f"{tile(site.map_sheet(n, m), sheet, 0, r, f'projection {r + 1}', 1)}"
            f"{tile(site.map_sheet(n, m), sheet, 1, r, f'patch {r + 1}', 1)}</span>"
            f"<figcaption><b>{r + 1}.</b> activation {number(values[r].item())}<br>"
            f"{photo_link(site, path, 1)}<br>at ({y}, {x}), box {pil_box(site.fields[n].box(y, x))}"
            f"</figcaption></figure>"
        )
    counts = torch.bincount(site.groups[images], minlength=len(site.classes)).tolist()
    means = site.means[n][m]
    peak = max((v for v in means.tolist() if not math.isnan(v)), default=0) or 1.0
    rows = "".join(
        f"{bar_row(name, 0 if math.isnan(v) else v / peak, colour, number(v))[:-5]}<td class=num>{c}</td></tr>"
        for name, v, colour, c in zip(site.classes, means.tolist(), site.colours, counts)
    )
    neighbours = " · ".join(
        part
        for part in (
            link(f"map{m - 1:03d}.html", f"← map {m - 1}") if m > 0 else "",
            link(f"../layer{n}.html", f"all {count} maps of layer {n}"),
            link(f"map{m + 1:03d}.html", f"map {m + 1} →") if m + 1 < count else "",
        )
        if part
    )
    rank = site.rankings[n].index(m) + 1
    body = (
        f'<p class="crumbs">{neighbours}</p>'
        f"<p>Map {m} of layer {n} ({kernel}×{kernel} filters), the {_ordinal(rank)}most active of {count}. "
        f"It is {side}×{side} activations large; "
        f"each activation sees a {sheet.size}×{sheet.size}-pixel patch of the "
        f"{site.preprocess['input_size']}-pixel input.</p>"
        f"<section><h2>Its {len(images)} strongest activations (figure 2)</h2>"
        f"<p>Over the {len(site.survey['paths'])} photos, each photo once, at its strongest place: the "
        f"projection by the deconvnet, then the image patch. Boxes are [left, top, right, bottom] in the input."
        f'</p><p class="note">{NORMALISATION}</p><div class="top9" style="--card:{2 * sheet.side + 40}px">'
        f"{''.join(figures)}</div></section>"
        f'<section><h2>Which classes drive it</h2><table class="meters"><thead><tr><th>{site.group_name}</th>'
        f"<th>mean strongest activation</th><th></th><th>in the top {TOP}</th></tr></thead>{rows}</table>"
        f"</section>"
    )
    return page(site, f"Layer {n}, map {m}", body, depth=1)


def _ordinal(k):
    """ "" for 1 (the most active), else "2nd ", "3rd ", "11th " and so on."""
    if k == 1:
        return ""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix} "


# One photo.


def photo_page(site, index):
    path, photo, entry = site.photos[index]
    files = dict(zip(("whole", *site.model.conv_layers, "a", "b", "c"), site.photo_files(photo)))
    size = site.preprocess["input_size"]
    whole = Sheet(size)
    probabilities = entry["probabilities"]
    top = probabilities.topk(min(5, len(site.classes)))
    predictions = "".join(
        bar_row(site.classes[k], p, site.colours[k]) for p, k in zip(top.values.tolist(), top.indices.tolist())
    )
    target = site.classes[entry["target"]]
    truth = (
        f"judged against <b>{escape(target)}</b>, the class of its folder"
        if os.path.basename(os.path.dirname(os.path.abspath(path))) == target
        else f"judged against <b>{escape(target)}</b>, the class the network predicts (its folder names no class)"
    )
    neighbours = " · ".join(
        part
        for part in (
            photo_link(site, site.photos[index - 1][0], 1, "← previous photo") if index > 0 else "",
            link("../index.html#photos", "all photo pages"),
            photo_link(site, site.photos[index + 1][0], 1, "next photo →") if index + 1 < len(site.photos) else "",
        )
        if part
    )
    seen = tile(files["whole"], whole, 0, 0, "the photo as the network sees it", 1)
    gradients = "".join(
        f"<figure>{tile(files['whole'], whole, 0, column, METHOD_NAMES[rule], 1)}"
        f"<figcaption>{escape(METHOD_NAMES[rule])} of the score of {escape(target)}</figcaption>"
        f"</figure>"
        for column, rule in enumerate(METHODS[1:], start=1)
    )
    body = (
        f'<p class="crumbs">{neighbours}</p><p>{escape(relative(path))}: {truth}.</p>'
        f'<section class="split"><figure>{seen}<figcaption>the {size}×{size} input</figcaption></figure>'
        f'<div><h2>Prediction</h2><table class="meters">{predictions}</table></div></section>'
        f"{occlusion_section(site, entry, files, target)}"
        f"<section><h2>What raises the score of {escape(target)}</h2><p>The score's gradient with respect to "
        f"the input, by two of the rules below.</p><p class=note>{NORMALISATION}</p>"
        f'<div class="figures">{gradients}</div></section>'
        f"{photo_layers(site, entry, files)}"
    )
    return page(site, os.path.basename(path), body, depth=1)


def occlusion_section(site, entry, files, target):
    """The three maps of figure 7, each drawn over the input's coordinates: a cell per
    position of the grey square, at the square's centre."""
    maps = entry["occlusion"]
    offsets, size, stride = maps["offsets"], maps["size"], maps["stride"]
    low, high = offsets[0] + size / 2 - stride / 2, offsets[-1] + size / 2 + stride / 2
    side = site.preprocess["input_size"]
    feature = maps["feature"]

    def drawn(name, caption, scale):
        return (
            f'<figure><span class="occlusion" style="width:{side}px;height:{side}px"><img class="pixelated" '
            f'src="../{files[name]}" alt="{escape(caption)}" style="left:{low:g}px;top:{low:g}px;'
            f'width:{high - low:g}px;height:{high - low:g}px"></span><figcaption>{escape(caption)}{scale}'
            f"</figcaption></figure>"
        )

    def colour_bar(name, low_text, high_text):
        stops = ", ".join(css_colours(name, [i / 7 for i in range(8)]))
        return (
            f'<span class="colour-bar"><span style="background:linear-gradient(to right, {stops})"></span>'
            f"<small>{low_text}</small><small>{high_text}</small></span>"
        )

    classes = "".join(
        f'<li><i style="background:{colour}"></i>{escape(name)}</li>'
        for name, colour in zip(site.classes, site.colours)
    )
    figures = (
        drawn(
            "a",
            f"(a) layer {maps['layer']}, map {maps['channel']}: total activation",
            colour_bar("viridis", number(feature.min().item()), number(feature.max().item())),
        )
        + drawn("b", f"(b) probability of {target}", colour_bar("magma", "0", "1"))
        + drawn("c", "(c) most probable class", f'<ul class="legend">{classes}</ul>')
    )
    strongest = link(f"../layer{maps['layer']}/map{maps['channel']:03d}.html", f"map {maps['channel']}")
    return (
        f"<section><h2>Occlusion (figure 7)</h2><p>A grey {size}-pixel square (the mean colour) moved by "
        f"{stride} pixels over the input; each cell shows, with the square centred there, (a) the total "
        f"activation of layer {maps['layer']}'s {strongest}, the strongest on this photo, (b) the probability "
        f'of {escape(target)}, (c) the most probable class.</p><div class="figures">{figures}</div></section>'
    )


def photo_layers(site, entry, files):
    labels = ("patch", *METHODS)  # short: the list above names them in full
    sections = []
    for n in site.model.conv_layers:
        sheet = site.sheets[n]
        cards = []
        for row, (m, y, x, value) in enumerate(entry["maps"][n]):
            tiles = "".join(
                f"<figure>{tile(files[n], sheet, row, column, label, 1)}"
                f"<figcaption>{escape(label)}</figcaption></figure>"
                for column, label in enumerate(labels)
            )
            cards.append(
                f'<div class="card">{link(f"../layer{n}/map{m:03d}.html", f"map {m}")}'
                f'<small>activation {number(value)} at ({y}, {x})</small><div class="row">{tiles}</div></div>'
            )
        sections.append(
            f'<h3>Layer {n}</h3><div class="cards" style="--card:{4 * sheet.side + 40}px">{"".join(cards)}</div>'
        )
    notes = "".join(f"<li><b>{escape(METHOD_NAMES[m])}</b> ({m}): {escape(METHOD_NOTES[m])}</li>" for m in METHODS)
    return (
        f"<section><h2>The most active maps of each layer on this photo</h2><p>Each map's strongest activation "
        f"on this photo, beside the patch it sees, projected to pixels three ways:</p><ul>{notes}</ul>"
        f"<p class=note>{NORMALISATION}</p>{''.join(sections)}</section>"
    )


# Figure 4.


def evolution_page(site):
    epochs, found = site.evolution["epochs"], site.evolution["found"]
    sections = []
    for n in site.model.conv_layers:
        sheet = site.sheets[n]
        header = "".join(f"<th>epoch {epoch}</th>" for epoch in epochs)
        rows = []
        for row, m in enumerate(site.evolution["maps"][n]):
            cells = "".join(
                f"<td>{tile(site.evolution_sheet(n), sheet, row, column, f'epoch {e}', 0)}"
                f"<small>{number(found[n][row, column, 3].item())}</small></td>"
                for column, e in enumerate(epochs)
            )
            rows.append(f'<tr><th scope="row">{link(f"layer{n}/map{m:03d}.html", f"map {m}")}</th>{cells}</tr>')
        sections.append(
            f'<section><h2>Layer {n}</h2><table class="methods"><thead><tr><th>map</th>{header}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
        )
    body = (
        f"<p>For the {len(site.evolution['maps'][site.model.conv_layers[0]])} most active maps of each layer "
        f"(at the checkpoint shown elsewhere), the strongest activation over the photos in each of the run's "
        f"training snapshots, projected by that snapshot's network, with its value.</p>"
        f'<p class="note">{NORMALISATION}</p><div class="figures">{"".join(sections)}</div>'
    )
    return page(site, "Evolution over training (figure 4)", body, current="evolution.html")
