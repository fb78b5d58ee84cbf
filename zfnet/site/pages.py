"""The explorer's pages: Jinja2 templates (templates/ beside this module, autoescaped, each
page extending base.html, the repeated pieces in macros.html), one style sheet (style.css), no
JavaScript. The functions here only gather what a page shows; the templates show it. Every
link is made relative to its page by one helper, `url`, and every page links back to the
overview (index.html).

    index.html              the run, its accuracy per class, the architecture, the photos
    layerN.html             every map of layer N as a card, strongest first
    layerN/mapNNN.html      one map: its top 9 (figure 2) by three rules, the classes that drive it,
                            what it wants to see, what it is wired to, how it grew
    photo/ID.html           one photo: prediction, occlusion (figure 7), projections
    evolution.html          figure 4, from the run's snapshots
    sanity.html             how much of each rule's pictures is the network (zfnet.studies.sanity)
"""

import functools
import math
import os
from dataclasses import dataclass, field
from urllib.parse import quote

import jinja2
import torch
from tqdm import tqdm

from zfnet.deconv import receptive_fields
from zfnet.files import write_text_if_changed
from zfnet.optimize import STEPS as OPTIMISE_STEPS
from zfnet.site import data
from zfnet.site.data import METHODS, architecture, class_means
from zfnet.site.pictures import Sheet, css_colours
from zfnet.top9 import pil_box

STYLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "style.css")
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
    classes: list  # the names shown: the run's readable names (train.py --class-names), else its folders
    folders: list  # the class folders it was trained on, which photos' folders are matched against
    preprocess: dict
    model: object
    survey: dict
    labels: object  # each survey photo's class index, or None when --images is not a class-folder tree
    sheets: dict = field(default_factory=dict)  # {layer: Sheet}
    ids: dict = field(default_factory=dict)  # {photo path: id}
    photos: list = field(default_factory=list)  # [(path, id, cached numbers)] with a page each
    evolution: dict = None
    sanity: dict = None  # zfnet.studies.sanity.summary of the sanity checks
    optimised: dict = field(default_factory=dict)  # {(layer, map): strengths} of the maps with a picture
    checkpoint_info: dict = None
    train_config: dict = None
    figures: list = field(default_factory=list)
    smoothness: tuple = None  # layer 1's share of filter energy below 1/4 cycle/px, and white noise's
    faded: int = 0  # layer-1 filters whose weights faded away (zfnet.spectra.faded_filters)
    noise_note: str = None  # zfnet.studies.features.layer1_note: layer 1 still near noise level
    tools: dict = field(default_factory=dict)  # {tool: [PNG paths]}
    filters: str = "img/filters.png"

    # Where the pictures lie, relative to the site's folder.
    @staticmethod
    def map_sheet(layer, m):
        return f"img/layer{layer}/rules{m:03d}.jpg"  # rows: deconvnet, patch, guided, gradient

    def photo_files(self, photo):
        return [
            f"img/photo/{photo}/{name}"
            for name in ("whole.jpg", *(f"layer{n}.jpg" for n in self.model.conv_layers), "a.png", "b.png", "c.png")
        ]

    @property
    def top(self):
        """Activations in each map's top: 9, the paper's, unless there are fewer photos."""
        return self.survey["top"][self.model.conv_layers[0]][0].shape[1]

    @staticmethod
    def thumbnail(photo):
        return f"img/thumb/{photo}.jpg"

    @staticmethod
    def evolution_sheet(layer):
        return f"img/evolution/layer{layer}.jpg"

    @staticmethod
    def optimised_picture(layer, m):
        return f"img/layer{layer}/wants{m:03d}.jpg"

    @staticmethod
    def growth_sheet(layer):
        return f"img/evolution/growth{layer}.jpg"  # a row per map, a column per snapshot

    def map_pictures(self, layer):
        """The pictures of layer `layer`'s maps that this build shows."""
        sheets = [self.map_sheet(layer, m) for m in self.rankings[layer]]
        return sheets + [self.optimised_picture(n, m) for n, m in self.optimised if n == layer]

    sanity_figure = "img/sanity.png"
    sanity_example = "img/sanity_example.png"

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
        write_text_if_changed(out.path("style.css"), file.read())
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
        jobs.append(("evolution.html", lambda: render(site, "evolution.html", "Evolution over training (figure 4)")))
    if site.sanity:
        jobs.append(("sanity.html", lambda: sanity_page(site)))
    for name, make in tqdm(jobs, desc="writing the pages", unit="page", leave=False):
        write_text_if_changed(out.path(name), make())


@jinja2.pass_context
def url(context, path):
    """A path inside the site, relative to the page being rendered (`depth` folders down)."""
    return "../" * context["depth"] + path


def number(value):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def ordinal(k):
    """ "" for 1 (the most active), else "2nd ", "3rd ", "11th " and so on."""
    if k == 1:
        return ""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix} "


TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("zfnet.site", "templates"),
    autoescape=True,  # every name and text is escaped, whatever a class or a photo is called
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.globals.update(url=url, zip=zip, basename=os.path.basename)
TEMPLATES.filters.update(number=number, ordinal=ordinal, relative=os.path.relpath)


def render(site, template, title, depth=0, current=None, **shown):
    """A whole page: `template` (which extends base.html) with what it shows."""
    parts = [("index.html", "Overview"), *((f"layer{n}.html", f"Layer {n}") for n in site.model.conv_layers)]
    if site.photos:
        parts.append(("index.html#photos", "Photos"))
    if site.evolution:
        parts.append(("evolution.html", "Evolution"))
    if site.sanity:
        parts.append(("sanity.html", "Sanity checks"))
    return TEMPLATES.get_template(template).render(
        site=site, title=title, depth=depth, current=current or template, parts=parts, **shown
    )


def readable_setting(value):
    """A training setting as text: a recipe's settings as `name value` pairs, not a dict."""
    if isinstance(value, dict):
        return " · ".join(f"{name.replace('_', ' ')} {setting}" for name, setting in value.items())
    return value


def overview(site):
    info, config = site.checkpoint_info, site.model.config
    accuracy = info.get("val_accuracy")
    facts = [
        ("checkpoint", os.path.relpath(site.checkpoint)),
        ("epochs trained", info.get("epoch")),
        ("validation accuracy (train.py)", None if accuracy is None else f"{accuracy:.1%}"),
        ("network", f"{config['arch']}, {config['width']} width, input {config['input_size']} px"),
        ("convolutional maps", " / ".join(map(str, config["conv_channels"]))),
        ("fully connected", " / ".join(map(str, config["fc_features"]))),
        ("classes", ", ".join(site.classes)),
    ]
    if site.train_config:
        facts += [(name.replace("_", " "), readable_setting(value)) for name, value in site.train_config.items()]
    return render(
        site,
        "index.html",
        "Overview",
        facts=[(name, value) for name, value in facts if value is not None],
        survey_count=len(site.survey["paths"]),
        skipped=len(site.survey["skipped"]),
        accuracy=accuracy_rows(site),
        architecture=architecture_rows(site),
        total_parameters=sum(p.numel() for p in site.model.parameters()),
        widest_tile=max(sheet.side for sheet in site.sheets.values()),
        photo_cards=photo_cards(site),
        mistakes=mistakes(site),
        tools=[
            (tool, [(quote(os.path.relpath(path, site.folder)), os.path.basename(path)) for path in paths])
            for tool, paths in site.tools.items()
        ],
    )


def accuracy_rows(site):
    """(name, share, colour, text) for all photos and each class, or None when classes are unknown."""
    if site.labels is None:
        return None
    correct = (site.predictions == site.labels).float()
    rows = [("all classes", correct.mean().item(), "#4a6fa5", f"{correct.mean().item():.1%} of {len(correct)}")]
    for k, (name, colour) in enumerate(zip(site.classes, site.colours)):
        mine = site.labels == k
        if mine.any():
            share = correct[mine].mean().item()
            rows.append((name, share, colour, f"{share:.1%} of {int(mine.sum())}"))
    return rows


def architecture_rows(site):
    rows = []
    for layer, operation, geometry, shape, receptive, parameters in architecture(
        site.model, site.preprocess["input_size"]
    ):
        rows.append(
            (
                layer,
                layer in site.model.conv_layers,
                operation,
                "" if geometry is None else "{0}×{0}, stride {1}, padding {2}".format(*geometry),
                " × ".join(map(str, shape)),
                "" if receptive is None else f"{receptive[0]}×{receptive[0]} px, every {receptive[1]} px",
                parameters,
            )
        )
    return rows


def photo_cards(site):
    """(path, its class when known, the predicted class) of each photo with a page."""
    index = {path: i for i, path in enumerate(site.survey["paths"])}
    return [
        (
            path,
            None if site.labels is None or path not in index else site.classes[int(site.labels[index[path]])],
            site.classes[int(entry["probabilities"].argmax())],
        )
        for path, _, entry in site.photos
    ]


def mistakes(site):
    """(path, its class, [(class, probability)] of the top 3) of each misclassified photo, or
    None when classes are unknown."""
    if site.labels is None:
        return None
    rows = []
    for i in site.misclassified():
        top = site.survey["probabilities"][i].topk(min(3, len(site.classes)))
        guesses = [(site.classes[k], p) for p, k in zip(top.values.tolist(), top.indices.tolist())]
        rows.append((site.survey["paths"][i], site.classes[int(site.labels[i])], guesses))
    return rows


def of_peak(values):
    """Each of `values` over the largest; NaN (a class without photos) stays NaN."""
    peak = max((v for v in values if not math.isnan(v)), default=0) or 1.0
    return [v / peak for v in values]


def class_heights(site, means):
    """(value, bar height in %, colour, class) per class, the tallest the largest mean."""
    values = means.tolist()
    return [
        (v, 0 if math.isnan(share) else max(2, round(100 * share)), colour, name)
        for v, share, colour, name in zip(values, of_peak(values), site.colours, site.classes)
    ]


def layer_page(site, n):
    strongest = site.survey["top"][n][0]
    cards = [(m, strongest[m].mean().item(), class_heights(site, site.means[n][m])) for m in site.rankings[n]]
    optimised = sum(layer == n for layer, _ in site.optimised)
    return render(site, "layer.html", f"Layer {n}", current=f"layer{n}.html", n=n, cards=cards, optimised=optimised)


def map_page(site, n, m):
    values, images, ys, xs = (column[m] for column in site.survey["top"][n])
    strongest = [
        (
            values[r].item(),
            site.survey["paths"][images[r]],
            int(ys[r]),
            int(xs[r]),
            pil_box(site.fields[n].box(int(ys[r]), int(xs[r]))),
        )
        for r in range(len(images))
    ]
    counts = torch.bincount(site.groups[images], minlength=len(site.classes)).tolist()
    means = site.means[n][m].tolist()
    classes = [
        (name, v, 0 if math.isnan(share) else share, colour, c)
        for name, v, share, colour, c in zip(site.classes, means, of_peak(means), site.colours, counts)
    ]
    kernel = site.model.stage(n).conv.kernel_size[0]
    below = site.model.conv_layers.index(n)
    wired = data.wiring(site.model, n, m) if below else []
    growth = None
    if site.evolution:
        found, (layer_drift, map_drift) = site.evolution["found"][n][m], site.evolution["drift"][n]
        growth = [
            (epoch, found[s, 3].item(), map_drift[m, s].item(), layer_drift[s])
            for s, epoch in enumerate(site.evolution["epochs"])
        ]
    return render(
        site,
        "map.html",
        f"Layer {n}, map {m}",
        depth=1,
        n=n,
        map=m,
        kernel=kernel,
        side=site.map_sides[n],
        rank=site.rankings[n].index(m) + 1,
        strongest=strongest,
        classes=classes,
        top=site.top,
        sanity=[(rule, values[n][0]) for rule, values in survival(site).items()],
        wants=site.optimised.get((n, m)),
        steps=OPTIMISE_STEPS,
        below=site.model.conv_layers[below - 1] if below else None,
        inputs=site.model.stage(n).conv.in_channels,
        wired=wired,
        growth=growth,
        growth_sheet=Sheet(data.GROWTH_TILE),
    )


def survival(site):
    """`{rule: {layer: (Spearman, SSIM)}}`: how much of each rule's pictures survives
    re-initialising every layer, from the sanity checks (empty without them)."""
    if not site.sanity:
        return {}
    last = site.sanity["steps"][-1]
    found = {}
    for row in site.sanity["table"]:
        if row["reinitialised_down_to"] == last:
            found.setdefault(row["rule"], {})[row["layer"]] = (row["spearman_mean"], row["ssim_mean"])
    return found


def sanity_page(site):
    report = site.sanity
    alike = {}
    for entry in report["specificity"]:
        alike.setdefault((entry["rule"], entry["layer"]), []).append(entry["projections_alike"])
        alike.setdefault(("photos", entry["layer"]), []).append(entry["photos_alike"])
    means = {key: sum(values) / len(values) for key, values in alike.items()}
    layers = site.model.conv_layers
    return render(
        site,
        "sanity.html",
        "Sanity checks: how much of each picture is the network",
        survival=survival(site),
        alike=means,
        layers=layers,
        rules=list(report["verdicts"]),
        activations=len(report["activations"]),
        maps=len(report["activations"]) // (site.top * len(layers)),
    )


def photo_page(site, index):
    path, photo, entry = site.photos[index]
    files = dict(zip(("whole", *site.model.conv_layers, "a", "b", "c"), site.photo_files(photo)))
    size = site.preprocess["input_size"]
    top = entry["probabilities"].topk(min(5, len(site.classes)))
    target = site.classes[entry["target"]]
    return render(
        site,
        "photo.html",
        os.path.basename(path),
        depth=1,
        path=path,
        files=files,
        size=size,
        whole_sheet=Sheet(size),
        target=target,
        from_folder=os.path.basename(os.path.dirname(os.path.abspath(path))) == site.folders[entry["target"]],
        previous=site.photos[index - 1][0] if index > 0 else None,
        next=site.photos[index + 1][0] if index + 1 < len(site.photos) else None,
        predictions=[(site.classes[k], p, site.colours[k]) for p, k in zip(top.values.tolist(), top.indices.tolist())],
        occlusion=occlusion_figures(site, entry, target),
        maps=entry["maps"],
        methods=METHODS,
        method_names=METHOD_NAMES,
        method_notes=METHOD_NOTES,
    )


def occlusion_figures(site, entry, target):
    """The three maps of figure 7, each drawn over the input's coordinates: a cell per
    position of the grey square, at the square's centre."""
    maps = entry["occlusion"]
    offsets, size, stride = maps["offsets"], maps["size"], maps["stride"]
    low, high = offsets[0] + size / 2 - stride / 2, offsets[-1] + size / 2 + stride / 2
    feature = maps["feature"]

    def colour_bar(name, low_text, high_text):
        stops = ", ".join(css_colours(name, [i / 7 for i in range(8)]))
        return {"stops": stops, "low": low_text, "high": high_text}

    return {
        "size": size,
        "stride": stride,
        "layer": maps["layer"],
        "channel": maps["channel"],
        "low": f"{low:g}",
        "width": f"{high - low:g}",
        "figures": [
            (
                "a",
                f"(a) layer {maps['layer']}, map {maps['channel']}: total activation",
                colour_bar("viridis", number(feature.min().item()), number(feature.max().item())),
            ),
            ("b", f"(b) probability of {target}", colour_bar("magma", "0", "1")),
            ("c", "(c) most probable class", "legend"),
        ],
    }
