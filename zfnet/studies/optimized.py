"""visualize.py optimize: what each chosen map wants to see (zfnet.optimize), beside the patch
of its strongest photo, and how much more the optimised picture excites it."""

import json
import time

import torch.nn.functional as F
from tqdm import tqdm

from zfnet import optimize
from zfnet.deconv import crop, receptive_fields
from zfnet.figures import caption, plt, save_figure
from zfnet.files import atomic_write_text

OUTPUTS = ("optimize.png", "optimize.json")

COMMAND = f"""What each chosen map wants to see (Erhan et al. 2009; Olah et al. 2017, "Feature
Visualization"): an input optimised, {optimize.STEPS} steps of Adam by default, to excite the
whole map, parametrised by its Fourier spectrum with decorrelated colours (the colour
covariance of the strongest photos' patches) and seen randomly shifted, scaled and rotated at
every step, as OpenAI Microscope's pictures are made. Beside each, the patch of the map's
strongest photo among --images, and the ratio of the two strongest activations.

With --diverse K, K pictures per map, each pushed away from the others' style (Olah et al.'s
diversity): a map that answers several things can show them, at K times the time.

Writes optimize.png (per layer a row of optimised pictures per --diverse, a row of strongest
patches) and optimize.json (each picture's strengths, the time it took, the settings)."""

TILE = 224  # pixels of each picture in the figure: a layer-1 patch magnified, a picture as it is


def measure(model, preprocess, maps, best, pictures, requests, steps, seed, per_map=1):
    """For `maps` ({layer: [map, ...]}), each one's `per_map` optimised pictures
    (zfnet.optimize.optimise, a layer's maps in one batch) and its strongest photo's patch.
    `best` is strongest_activations' result, `pictures` the strongest photos in [0, 1] and
    `requests` their (image, layer, map, y, x) into `pictures`, one per map in `maps`' order.
    Returns `{layer: [entry per picture, map by map]}` and the colour matrix used."""
    colours, fields = optimize.colour_matrix(pictures), receptive_fields(model)
    found, strongest = {}, iter(requests)
    for layer, chosen in maps.items():
        with tqdm(total=steps, desc=f"optimising layer {layer}", leave=False) as bar:
            start = time.perf_counter()
            optimised, strengths = optimize.optimise(
                model, layer, chosen, preprocess, colours, steps, seed, lambda: bar.update(), per_map
            )
            seconds = time.perf_counter() - start
        alike = optimize.pictures_similarity(model, layer, optimised, preprocess, per_map) if per_map > 1 else None
        found[layer] = []
        for index, (picture, strength) in enumerate(zip(optimised, strengths.tolist())):
            m, variant = chosen[index // per_map], index % per_map
            if variant == 0:
                image, _, _, y, x = next(strongest)
            photo = best[layer][0][m, 0].item()
            found[layer].append(
                {
                    "map": m,
                    "variant": variant,
                    "style_similarity": None if alike is None else alike[index].item(),
                    "optimised": strength,
                    "strongest_photo": photo,
                    "ratio": strength / photo if photo > 0 else None,
                    "seconds": seconds / len(chosen),
                    "picture": picture,
                    "patch": crop(pictures[image], fields[layer].box(y, x)),
                    "photo_index": image,
                }
            )
    return found, colours


def magnified(picture):
    """A (3, S, S) picture in [0, 1] as a TILE-pixel image (nearest neighbour: crisp pixels)."""
    return F.interpolate(picture[None], size=(TILE, TILE), mode="nearest")[0].permute(1, 2, 0).clamp(0, 1).numpy()


def plot(found, path, title):
    """Per layer a row per picture of a map (--diverse), each titled with its map and strength,
    and a row of the strongest photos' patches with theirs."""
    per_map = 1 + max(entry["variant"] for entries in found.values() for entry in entries)
    columns = max(len(entries) for entries in found.values()) // per_map
    rows = (per_map + 1) * len(found)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows), squeeze=False, layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for block, (layer, entries) in enumerate(found.items()):
        first_row = block * (per_map + 1)
        for index, entry in enumerate(entries):
            column, variant = divmod(index, per_map)
            top = axes[first_row + variant, column]
            top.imshow(magnified(entry["picture"]))
            ratio = f" ({entry['ratio']:.1f}x)" if entry["ratio"] is not None else ""
            top.set_title(f"L{layer} map {entry['map']}: {entry['optimised']:.2f}{ratio}", fontsize=8)
            if variant == 0:
                bottom = axes[first_row + per_map, column]
                bottom.imshow(magnified(entry["patch"]))
                bottom.set_title(f"strongest photo: {entry['strongest_photo']:.2f}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    pictures = "a picture" if per_map == 1 else f"{per_map} pictures, each pushed away from the others' style,"
    caption(
        figure,
        f"Per layer, above: {pictures} optimised to excite the whole map, titled with the map's strongest "
        "activation on it and, in brackets, that over the strongest photo's; below: the patch of that strongest photo.",
    )
    save_figure(figure, path)


def summary(checkpoint, images, steps, seed, found, colours, photos):
    """optimize.json's content: the settings and each map's numbers."""
    return {
        "checkpoint": checkpoint,
        "images": images,
        "steps": steps,
        "seed": seed,
        "learning_rate": optimize.LEARNING_RATE,
        "transformations": {
            "shift_pixels": optimize.SHIFT,
            "scales": list(optimize.SCALES),
            "degrees": optimize.DEGREES,
        },
        "colour_matrix": colours.tolist(),
        "maps": [
            {
                "layer": layer,
                **{key: value for key, value in entry.items() if key not in ("picture", "patch", "photo_index")},
                "strongest_photo_path": photos[entry["photo_index"]],
            }
            for layer, entries in found.items()
            for entry in entries
        ],
    }


def lines(found):
    """What the run found, a line per layer: the strengths reached, against the strongest photos'."""
    said = []
    for layer, entries in found.items():
        ratios = [entry["ratio"] for entry in entries if entry["ratio"] is not None]
        beaten = sum(entry["optimised"] > entry["strongest_photo"] for entry in entries)
        per_map = 1 + max(entry["variant"] for entry in entries)
        diverse = ""
        if per_map > 1:
            alike = [entry["style_similarity"] for entry in entries]
            diverse = (
                f" ({per_map} pictures; style similarity to a map's others {min(alike):.2f}-{max(alike):.2f}, 1: alike)"
            )
        said.append(
            f"layer {layer}: {beaten} of {len(entries)} optimised pictures excite their map more than its strongest "
            f"photo" + (f" ({min(ratios):.1f}x to {max(ratios):.1f}x)" if ratios else "") + f", "
            f"{entries[0]['seconds']:.1f} s a map{diverse}"
        )
    return said


def write(found, report, outputs, title):
    """Write optimize.png and optimize.json; the lines to print."""
    figure, index = outputs
    plot(found, figure, title)
    atomic_write_text(index, json.dumps(report, indent=1) + "\n")
    return [*lines(found), f"wrote {figure}", f"wrote {index}"]
