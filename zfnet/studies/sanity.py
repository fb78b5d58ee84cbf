"""Sanity checks for the projections (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"):
how much of each rule's picture is the trained network, layer by layer.

A projection says something about what the network learned only if it changes when what was
learned is thrown away. The model-randomisation test re-initialises the layers from the top
(the classifier, then layer 7, 6, ..., 1), cumulatively, as the network was initialised
before training, and compares each activation's projection after every step with the trained
network's: the Spearman rank correlation of their magnitudes, and the SSIM (Wang et al. 2004)
of the magnitudes scaled to [0, 1], as Adebayo et al. report them. A picture that survives
re-initialising every layer shows the method and the architecture (the pooling switches, the
forward pass's masks, the photo itself), not what the weights learned. A layer's projection
depends only on the layers up to it, so the steps above it leave it exactly as it was.

Image specificity: how alike a map's projections of its strongest photos are to each other
(the mean Spearman correlation of their magnitudes over every pair), against how alike their
image patches are (the same for their brightness). Projections much more alike than their
photos draw one template whatever the photo.

Projections are those of a signal of 1 at each activation's place (zfnet.deconv.project with
`unit`): the pattern the figures show (they stretch each projection by its own scale), drawn
also where a re-initialised network's activation is off.

- `cascade(model)`, `randomised(model, seed)`: the order and the networks after each step;
- `spearman`, `ssim`: the two similarities;
- `measure(...)`: both tests for chosen activations; `verdicts`, `rows` (sanity.csv),
  `summary` (sanity.json) and `plot` (sanity.png, sanity_example.png) report them.

visualize.py sanity and the explorer's sanity page use it.
"""

import collections
import copy
import itertools
import json
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model import initialize
from zfnet.deconv import crop, inside, project, receptive_fields
from zfnet.figures import caption, plt, save_figure
from zfnet.files import atomic_write_text
from zfnet.projections import RULES
from zfnet.tables import csv_text

# sanity.json's layout and wording: the explorer measures again a cached report of another.
FORMAT = 3
OUTPUTS = ("sanity.json", "sanity.csv", "sanity.png", "sanity_example.png")

COMMAND = """Sanity checks (Adebayo et al. 2018): for the activations top9 shows, how much of each
rule's projection survives re-initialising the network's layers from the top down, cumulatively
(Spearman rank correlation and SSIM of the magnitudes), and how alike a map's projections
are against how alike their photos are; a verdict per rule and layer in words, and per layer
the rule whose picture depends most on the learned weights. Projections are of a signal of 1
at each activation's place: the pattern the figures show, drawn even where a re-initialised
network's activation is off.

Writes sanity.png (the curves), sanity_example.png (one activation through the cascade),
sanity.csv and sanity.json (verdicts, the recommended rule per layer, every score)."""

# How much of the trained picture's ranks may survive re-initialising every layer before the
# verdict says that the picture shows the architecture more than the weights, or partly both.
MOSTLY_ARCHITECTURE, PARTLY = 0.5, 0.25
# By how much a map's projections may be more alike than their photos before the verdict
# calls them one template.
TEMPLATE_MARGIN = 0.2


def cascade(model):
    """`[(step, [module name, ...])]`: the layers re-initialised at each step, the classifier
    first, then the layers from the top down."""
    layers = sorted(model.conv_layers + model.fc_layers, reverse=True)
    return [("classifier", ["classifier"])] + [(f"layer {n}", [f"layer{n}"]) for n in layers]


def randomised(model, seed):
    """Yields `(step, network)` for each step of `cascade`: a copy of `model`, on its device,
    with that step's layers and every earlier step's re-initialised by model.initialize, drawn
    from one generator seeded with `seed`, in cascade order. `model` itself is left as it was."""
    device = next(model.parameters()).device
    network = copy.deepcopy(model).cpu()  # drawn on the CPU: a seeded generator repeats there on any machine
    generator = torch.Generator().manual_seed(seed)
    for step, names in cascade(network):
        for name in names:
            for module in network.get_submodule(name).modules():
                initialize(module, generator)
        yield step, copy.deepcopy(network).to(device)


def _ranks(values):
    """The ranks (1 to n) of a 1-D float64 array's values, ties given the mean of their ranks.
    NumPy's, not torch's: most patches hold a few hundred pixels, and there a torch call's
    overhead costs more than its sort (bench/sanity_speed.py)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(values)))
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(starts + (counts + 1) / 2, counts)
    return ranks


def spearman(a, b):
    """The Spearman rank correlation of two tensors of equal size, element by element (0 when
    either is constant: they share no pattern)."""
    a, b = (_ranks(values.detach().flatten().double().cpu().numpy()) for values in (a, b))
    a, b = a - a.mean(), b - b.mean()
    # Sums of products, not `@`: NumPy's BLAS would start threads that spin beside torch's.
    norm = math.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum()) / norm if norm > 0 else 0.0


def _gaussian_weights(side, sigma=1.5):
    steps = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    weights = torch.exp(-steps.square() / (2 * sigma**2))
    return weights / weights.sum()


def ssim(a, b):
    """The mean structural similarity of two pictures (H, W) with values in [0, 1]: Wang et
    al. 2004's, over 11x11 Gaussian windows (sigma 1.5; smaller pictures: the largest odd
    window that fits), only windows wholly inside."""
    side = min(11, *a.shape)
    side -= 1 - side % 2
    weights = _gaussian_weights(side)
    a, b = (picture.double().cpu() for picture in (a, b))
    # The five local means in one batch, the Gaussian window as a column then a row: the same
    # sums as the 2-D window's, in 2 x 11 products a pixel instead of 121.
    stacked = torch.stack([a, b, a * a, b * b, a * b])[:, None]
    means = F.conv2d(F.conv2d(stacked, weights.view(1, 1, side, 1)), weights.view(1, 1, 1, side))[:, 0]
    mean_a, mean_b, mean_aa, mean_bb, mean_ab = means
    var_a, var_b = mean_aa - mean_a**2, mean_bb - mean_b**2
    covariance = mean_ab - mean_a * mean_b
    c1, c2 = 0.01**2, 0.03**2
    numerator = (2 * mean_a * mean_b + c1) * (2 * covariance + c2)
    return (numerator / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))).mean().item()


def _scaled(magnitude):
    peak = magnitude.max()
    return magnitude / peak if peak > 0 else magnitude


def _mutual(pictures, masks):
    """The mean Spearman correlation over every pair of `pictures`, each over the pixels
    that both `masks` mark (the parts of their patches inside their photos)."""
    pairs = [
        spearman(a[both], b[both])
        for (a, mask_a), (b, mask_b) in itertools.combinations(zip(pictures, masks), 2)
        if (both := mask_a & mask_b).sum() > 1
    ]
    return sum(pairs) / len(pairs) if pairs else float("nan")


@dataclass
class Sanity:
    """What `measure` found. `steps`: the cascade's step names. `scores[rule][measure]`:
    (steps, requests) similarities to the trained network's projections ("spearman",
    "ssim"). `alike[rule][(layer, map)]`: how alike the map's projections are;
    `photos_alike[(layer, map)]`: how alike their image patches are. `examples[rule]`: the
    magnitude of request `example`'s projection by the trained network then after each step."""

    requests: list
    steps: list
    scores: dict
    alike: dict
    photos_alike: dict
    examples: dict
    example: int


def measure(model, inputs, pictures, requests, rules=RULES, seed=0, example=0, networks=None):
    """Both tests for `requests` ((image, layer, map, y, x), indices into `inputs`, network
    inputs, and `pictures`, the same photos as pictures in [0, 1]), by each of `rules`, the
    trained pictures compared with those of `networks` ((step, network) pairs; by default
    `randomised(model, seed)`)."""
    fields = receptive_fields(model)
    size = inputs.shape[-1]
    boxes = [fields[layer].box(y, x) for _, layer, _, y, x in requests]
    masks = [crop(torch.ones(1, size, size), box)[0] > 0 for box in boxes]

    def magnitudes(network, rule):
        return [patch.abs().sum(0).cpu() for patch in project(network, inputs, requests, rule=rule, unit=True)]

    def compare(trained, found):
        spearmans = [spearman(a[mask], b[mask]) for a, b, mask in zip(trained, found, masks)]
        ssims = [
            ssim(*(_scaled(inside(m[None], box, size)[0]) for m in (a, b))) for a, b, box in zip(trained, found, boxes)
        ]
        return spearmans, ssims

    trained = {rule: magnitudes(model, rule) for rule in rules}
    steps, scores = [], {rule: {"spearman": [], "ssim": []} for rule in rules}
    examples = {rule: [trained[rule][example]] for rule in rules}
    for step, network in randomised(model, seed) if networks is None else networks:
        steps.append(step)
        for rule in rules:
            found = magnitudes(network, rule)
            for name, values in zip(("spearman", "ssim"), compare(trained[rule], found)):
                scores[rule][name].append(values)
            examples[rule].append(found[example])
    groups = {}
    for i, (_, layer, channel, _, _) in enumerate(requests):
        groups.setdefault((layer, channel), []).append(i)
    brightness = [crop(pictures[image], box).mean(0) for (image, *_), box in zip(requests, boxes)]
    photos_alike = {
        key: _mutual([brightness[i] for i in rows], [masks[i] for i in rows]) for key, rows in groups.items()
    }
    alike = {
        rule: {key: _mutual([trained[rule][i] for i in rows], [masks[i] for i in rows]) for key, rows in groups.items()}
        for rule in rules
    }
    scores = {
        rule: {name: torch.tensor(values, dtype=torch.float64) for name, values in found.items()}
        for rule, found in scores.items()
    }
    return Sanity(requests, steps, scores, alike, photos_alike, examples, example)


def _layers(sanity):
    return sorted({layer for _, layer, *_ in sanity.requests})


def _of_layer(sanity, layer):
    return torch.tensor([request[1] == layer for request in sanity.requests])


def _mean_spread(values):
    return values.mean().item(), (values.std().item() if len(values) > 1 else 0.0)


def _per_map(sanity, layer):
    """How many projections a map of `layer` has (the most any of its maps has)."""
    counts = collections.Counter((n, channel) for _, n, channel, _, _ in sanity.requests if n == layer)
    return max(counts.values())


def _layer_alike(alike, layer):
    values = [value for (n, _), value in alike.items() if n == layer and not math.isnan(value)]
    return sum(values) / len(values) if values else float("nan")


def rows(sanity):
    """sanity.csv: per rule, layer and cascade step, the mean and spread of both similarities
    over the layer's activations."""
    table = []
    for rule, found in sanity.scores.items():
        for layer in _layers(sanity):
            mine = _of_layer(sanity, layer)
            for s, step in enumerate(sanity.steps):
                spearmans, ssims = found["spearman"][s, mine], found["ssim"][s, mine]
                (spearman_mean, spearman_sd), (ssim_mean, ssim_sd) = _mean_spread(spearmans), _mean_spread(ssims)
                table.append(
                    {
                        "rule": rule,
                        "layer": layer,
                        "reinitialised_down_to": step,
                        "spearman_mean": round(spearman_mean, 4),
                        "spearman_sd": round(spearman_sd, 4),
                        "ssim_mean": round(ssim_mean, 4),
                        "ssim_sd": round(ssim_sd, 4),
                        "activations": int(mine.sum()),
                    }
                )
    return table


def survival(sanity, rule, layer):
    """`(spearman, ssim)`: the mean similarity of a layer's projections by `rule` after every
    layer was re-initialised to the trained network's."""
    mine = _of_layer(sanity, layer)
    return tuple(sanity.scores[rule][name][-1, mine].mean().item() for name in ("spearman", "ssim"))


def verdict(rule, layer, survives, survives_ssim, alike, photos_alike, per_map):
    """One sentence on what a rule's pictures of a layer show, with the numbers behind it;
    `per_map`: how many projections of each map `alike` compares."""
    # "The weights", not "what was learned": the test tells a picture that depends on the
    # weights from one that does not, whether or not they have left their random start (layer
    # 1's smoothness says that, zfnet.studies.features.layer1_note).
    if survives >= MOSTLY_ARCHITECTURE:
        meaning = "it shows the architecture more than the weights"
    elif survives >= PARTLY:
        meaning = "it shows partly the weights, partly the architecture"
    else:
        meaning = "it shows the weights rather than the architecture"
    sentence = (
        f"layer {layer}, {rule}: {survives:.2f} of the picture survives re-initialising every layer "
        f"(Spearman {survives:.2f}, SSIM {survives_ssim:.2f}); {meaning}"
    )
    if alike - photos_alike > TEMPLATE_MARGIN:
        sentence += (
            f"; a map's {per_map} projections are more alike ({alike:.2f}) than their photos ({photos_alike:.2f}): "
            "one template whatever the photo"
        )
    return sentence


def verdicts(sanity):
    """`{rule: {layer: sentence}}` and, per layer, the rule whose pictures depend most on the
    learned weights (the least survival) with the reason."""
    sentences, recommended = {}, {}
    for layer in _layers(sanity):
        survived = {}
        for rule in sanity.scores:
            survives, survives_ssim = survival(sanity, rule, layer)
            survived[rule] = survives
            sentences.setdefault(rule, {})[layer] = verdict(
                rule,
                layer,
                survives,
                survives_ssim,
                _layer_alike(sanity.alike[rule], layer),
                _layer_alike(sanity.photos_alike, layer),
                _per_map(sanity, layer),
            )
        best = min(survived, key=survived.get)
        others = ", ".join(f"{rule} {value:.2f}" for rule, value in survived.items() if rule != best)
        recommended[layer] = {
            "rule": best,
            "why": f"the least of its picture survives re-initialising every layer ({survived[best]:.2f}; {others})",
        }
    return sentences, recommended


def summary(checkpoint, images, seed, sanity, paths):
    """sanity.json: what was measured on what, the verdicts, the recommended rule per layer,
    the table, and every activation's scores."""
    sentences, recommended = verdicts(sanity)
    return {
        "format": FORMAT,
        "checkpoint": checkpoint,
        "images": images,
        "seed": seed,
        "method": "model randomisation, cascading from the classifier down (Adebayo et al. 2018); Spearman of "
        "projection magnitudes, SSIM of magnitudes scaled to [0, 1]; image specificity: mean pairwise Spearman of a "
        "map's projections against that of their image patches' brightness",
        "steps": sanity.steps,
        "verdicts": {rule: {str(layer): line for layer, line in lines.items()} for rule, lines in sentences.items()},
        "recommended": {str(layer): choice for layer, choice in recommended.items()},
        "specificity": [
            {
                "rule": rule,
                "layer": layer,
                "map": channel,
                "projections_alike": round(value, 4),
                "photos_alike": round(sanity.photos_alike[(layer, channel)], 4),
            }
            for rule, found in sanity.alike.items()
            for (layer, channel), value in found.items()
        ],
        "table": rows(sanity),
        "activations": [
            {
                "image": paths[image],
                "layer": layer,
                "map": channel,
                "y": y,
                "x": x,
                **{
                    f"{rule}_{name}": [round(value, 4) for value in found[name][:, i].tolist()]
                    for rule, found in sanity.scores.items()
                    for name in found
                },
            }
            for i, (image, layer, channel, y, x) in enumerate(sanity.requests)
        ],
    }


def plot(sanity, path, example_path, example_name):
    """sanity.png: each rule's similarity to the trained pictures along the cascade, a line per
    layer; sanity_example.png: one activation's projection magnitude by each rule, trained and
    after each step."""
    layers, rules = _layers(sanity), list(sanity.scores)
    labels = ["trained", *(f"down to\n{step}" for step in sanity.steps)]
    figure, axes = plt.subplots(2, len(rules), figsize=(4.6 * len(rules), 7.4), squeeze=False, sharey="row")
    colours = plt.get_cmap("viridis")(torch.linspace(0, 0.9, len(layers)).tolist())
    for column, rule in enumerate(rules):
        for row, name in enumerate(("spearman", "ssim")):
            axis = axes[row, column]
            for layer, colour in zip(layers, colours):
                means = [1.0] + [
                    values.mean().item() for values in sanity.scores[rule][name][:, _of_layer(sanity, layer)]
                ]
                axis.plot(range(len(labels)), means, marker="o", markersize=3, color=colour, label=f"layer {layer}")
            axis.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90)
            axis.set_ylim(min(-0.1, axis.get_ylim()[0]), 1.05)
            axis.axhline(0, color="grey", linewidth=0.5)
            axis.grid(alpha=0.3)
            axis.set_title(f"{rule}: {'Spearman rank correlation' if name == 'spearman' else 'SSIM'}", fontsize=10)
        axes[0, column].set_xticklabels([])
    figure.supylabel("similarity to the trained network's projection (mean over the layer's activations)", fontsize=10)
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    deepest = layers[-1]
    survived = ", ".join(f"{rule} {survival(sanity, rule, deepest)[0]:.2f}" for rule in rules)
    figure.suptitle("Model randomisation: layers re-initialised from the top down, cumulatively")
    caption(
        figure,
        f"Layer {deepest} with every layer re-initialised keeps this much of its trained picture's ranks: {survived}. "
        "A line that stays high after its own layer is re-initialised shows the method, not what was learned.",
    )
    save_figure(figure, path)

    columns = len(labels)
    figure, axes = plt.subplots(len(rules), columns, figsize=(1.6 * columns, 1.8 * len(rules) + 0.6), squeeze=False)
    for row, rule in enumerate(rules):
        for column, (label, magnitude) in enumerate(zip(labels, sanity.examples[rule])):
            axis = axes[row, column]
            axis.imshow(_scaled(magnitude).numpy(), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(label, fontsize=6)
            score = "" if column == 0 else f"{sanity.scores[rule]['spearman'][column - 1, sanity.example]:.2f}"
            axis.set_xlabel(score, fontsize=7)
        axes[row, 0].set_ylabel(rule, fontsize=9)
    _, layer, channel, y, x = sanity.requests[sanity.example]
    figure.suptitle(f"{example_name}: layer {layer}, map {channel} at ({y}, {x}), projection magnitude", fontsize=9)
    caption(figure, "Under each picture: its Spearman correlation with the trained network's (the first column).")
    save_figure(figure, example_path)


def write(sanity, report, paths, example_name):
    """Write `summary`'s `report` and `plot`'s figures into `paths` (in the order of OUTPUTS);
    returns the lines to print: the verdicts, the recommended rules, what was written."""
    json_path, csv_path, figure, example_figure = paths
    plot(sanity, figure, example_figure, example_name)
    atomic_write_text(json_path, json.dumps(report, indent=1) + "\n")
    atomic_write_text(csv_path, csv_text(rows(sanity)))
    lines = [line for verdicts in report["verdicts"].values() for line in verdicts.values()]
    lines += [
        f"layer {layer}: use {choice['rule']}: {choice['why']}" for layer, choice in report["recommended"].items()
    ]
    return lines + [f"wrote {figure}, {example_figure}, {csv_path} and {json_path}"]
