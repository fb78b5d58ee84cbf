"""explore.py's work: compute what the site shows (zfnet.site.data), write its pictures
(zfnet.site.pictures) and pages (zfnet.site.pages), and serve it when asked.

The folder is claimed as every tool's output folder is (zfnet.outputs). What a build computes
is kept in its cache.pt and every picture is written once: a re-run for the same checkpoint
and photos computes only what is missing (a photo page not made before, a deleted picture),
and rewrites the pages. A build for another checkpoint or other photos first removes the
pictures of the previous one.
"""

import filecmp
import functools
import glob
import hashlib
import http
import http.server
import os
import re
import shutil
import sys
from urllib.parse import quote

import torch
from tqdm import tqdm

from zfnet import optimize
from zfnet.arguments import out_folder
from zfnet.checkpoint import load_checkpoint, read_checkpoint
from zfnet.errors import UserError
from zfnet.images import find_images, load_input
from zfnet.outputs import OutputFolder, require_outside
from zfnet.runtime import pick_device
from zfnet.site import data, pages
from zfnet.site.pictures import (
    Sheet,
    as_uint8,
    patch_picture,
    projection_picture,
    small_projection_picture,
    write_classes,
    write_filters,
    write_map,
    write_picture,
)
from zfnet.spectra import faded_filters, noise_smoothness, smoothness
from zfnet.studies import evolution, features, sanity
from zfnet.top9 import require_usable, spread_evenly

# Everything a build writes (the patterns let OutputFolder take back a folder of them).
OUTPUTS = (
    "index.html",
    "style.css",
    "layer*.html",
    "layer[0-9]",
    "photo",
    "img",
    "evolution.html",
    "cache.pt",
    "curves.png",
    "confusion.png",
)
RUN_FIGURES = ("curves.png", "confusion.png")  # train.py's, copied in
TOOLS = ("visualize", "occlusion", "invariance", "correspondence", "compare_arch")  # their PNGs are linked
THUMBNAIL = 112  # pixels
LONGEST_ID = 100  # characters of a photo's id, which names its page and its pictures
IMAGES_PER_PASS = 32  # photos whose projections are made together (bounds the memory they take)
GROWTH_CHUNK = 64  # maps traced across the snapshots together (bounds the projections held)


def build(args):
    """Build (or bring up to date) the site that `args` (explore.py's) describe; returns the
    folder."""
    device = pick_device(args.device)
    model, checkpoint = load_checkpoint(args.checkpoint, device)
    folders, preprocess = checkpoint["classes"], checkpoint["preprocess"]
    paths = find_images(args.images)
    listed = {path: load_input(path, preprocess) for path in args.photo_files}  # a bad one stops us now
    folder = out_folder(args, "explore")
    require_outside(folder, args.images, "--images")
    out = OutputFolder.claim(folder, inputs=[args.checkpoint, *paths, *listed], outputs=OUTPUTS)

    key = data.survey_key(args.checkpoint, paths)
    cache = data.load_cache(out.path("cache.pt"), key)
    decoded = {}
    if cache is None:
        _clear(folder)
        found, decoded["inputs"] = data.survey(model, paths, preprocess, args.batch_size)
        cache = {"key": key, "survey": found, "photos": {}}
    survey = cache["survey"]
    require_usable(survey["paths"], survey["skipped"], args.images)

    def inputs():
        """The survey photos' inputs, decoded only when a missing picture needs them."""
        if decoded.get("inputs") is None:
            decoded["inputs"] = torch.stack(
                [
                    load_input(path, preprocess)
                    for path in tqdm(survey["paths"], desc="decoding the photos", leave=False)
                ]
            )
        return decoded["inputs"]

    site = pages.Site(
        folder=folder,
        checkpoint=args.checkpoint,
        images=args.images,
        classes=checkpoint.get("class_names", folders),
        folders=folders,
        preprocess=preprocess,
        model=model,
        survey=survey,
        labels=data.class_labels(survey["paths"], args.images, folders),
    )
    site.sheets = {n: Sheet(field.size) for n, field in site.fields.items()}
    earlier = [] if args.fresh else earlier_photos(cache, survey["paths"], listed, preprocess)
    site.ids = photo_ids(survey["paths"], args.images, listed)
    chosen = [*earlier, *(path for path in chosen_photos(args, site, listed) if path not in earlier)]
    write_map_sheets(site, out, model, inputs)
    site.optimised = write_optimised(site, out, cache, model, args.optimize, inputs)
    write_photo_pages(site, out, cache, model, inputs, chosen, listed)
    write_thumbnails(site, out, inputs, listed)
    site.evolution = write_evolution(site, out, cache, args, inputs)
    site.sanity = write_sanity(site, out, cache, model, inputs)
    for n in model.conv_layers:  # the pictures of maps that earlier builds showed and this one does not
        prune(out.path("img", f"layer{n}"), {os.path.basename(name) for name in site.map_pictures(n)})
    describe_run(site, out, args.checkpoint, checkpoint, model)
    data.save_cache(out.path("cache.pt"), cache)
    pages.write_site(site, out)
    return folder


def _clear(folder):
    """Remove a previous build's files (of another checkpoint or other photos)."""
    for pattern in OUTPUTS:
        for path in glob.glob(os.path.join(glob.escape(folder), pattern)):
            remove(path)


def remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def photo_ids(paths, images, listed):
    """`{path: id}`: a name for each photo's page and pictures, made of letters, digits, - and
    _: its path inside --images (or, for a photo named by --photos outside it, its file
    name) without the extension, / as -, cut to LONGEST_ID characters (the end replaced by a
    digest of the whole name); a number is added where two would be the same."""
    ids, taken = {}, set()
    for path in [*paths, *(path for path in listed if path not in paths)]:
        inside = os.path.relpath(path, images)
        name = os.path.basename(path) if inside.startswith(os.pardir) else inside
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.splitext(name)[0]).strip("-") or "photo"
        if len(base) > LONGEST_ID:  # a file name may take 255 bytes, and a page's name adds to its id
            base = f"{base[: LONGEST_ID - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        stem, number = base, 1
        while stem in taken:
            number += 1
            stem = f"{base}-{number}"
        ids[path] = stem
        taken.add(stem)
    return ids


def earlier_photos(cache, surveyed, listed, preprocess):
    """The photos that had a page in the last build for this checkpoint and these photos, in
    their order, as long as they are still there: a build adds pages, it does not drop them
    (explore.py --fresh does). Those outside the survey are decoded into `listed`."""
    paths, surveyed = [], set(surveyed)
    for entry in cache["photos"].values():
        path = entry.get("path")
        if path is None or path in paths:  # a page from before pages recorded their photo's path
            continue
        if path not in surveyed and path not in listed:
            try:
                listed[path] = load_input(path, preprocess)
            except UserError as error:
                print(f"note: the page of {path} goes: {error}", file=sys.stderr)
                continue
        paths.append(path)
    return paths


def chosen_photos(args, site, listed):
    """The photos that get a page: those named by --photos, else --photos N of the survey's,
    spread over the folder, up to half of them misclassified ones when classes are known."""
    if listed:
        return list(listed)
    paths, wrong = site.survey["paths"], site.misclassified()
    right = sorted(set(range(len(paths))) - set(wrong))
    picked = [wrong[i] for i in spread_evenly(len(wrong), args.photo_count // 2)] if wrong and args.photo_count else []
    rest = args.photo_count - len(picked)
    picked += [right[i] for i in spread_evenly(len(right), rest)] if right and rest else []
    return [paths[i] for i in sorted(picked)]


def missing(out, names):
    """The pictures of `names` (relative to the site's folder) that are not there."""
    return [name for name in names if not os.path.exists(out.path(name))]


def write_map_sheets(site, out, model, inputs):
    """Each map's sheet (zfnet.site.pictures): its top-9 projections by the deconvnet, their
    patches, then the projections by guided backpropagation and by the gradient. The
    projections of all missing sheets are made together, a few photos at a time, so that each
    photo's forward pass serves all of its projections."""
    todo = [
        (n, m)
        for n in model.conv_layers
        for m in range(len(site.survey["top"][n][0]))
        if missing(out, [site.map_sheet(n, m)])
    ]
    if not todo:
        return
    requests = []
    for n, m in todo:
        _, images, ys, xs = site.survey["top"][n]
        requests += [(images[m, r].item(), n, m, ys[m, r].item(), xs[m, r].item()) for r in range(images.shape[1])]
    pictures, seen = {}, data.seen(inputs(), site.preprocess)
    photos = sorted({request[0] for request in requests})
    for start in tqdm(
        range(0, len(photos), IMAGES_PER_PASS),
        desc=f"projecting the top {site.top} of every map",
        unit="pass",
        leave=False,
    ):
        wanted = set(photos[start : start + IMAGES_PER_PASS])
        part = [request for request in requests if request[0] in wanted]
        by_rule = [data.projected(model, inputs(), part, rule) for rule in data.METHODS]
        for (image, n, m, y, x), *patches in zip(part, *by_rule):
            deconvnet, guided, gradient = (projection_picture(patch) for patch in patches)
            pictures[(n, m, image)] = (
                deconvnet,
                patch_picture(seen[image], site.fields[n].box(y, x)),
                guided,
                gradient,
            )
    for n, m in todo:
        images = site.survey["top"][n][1][m].tolist()
        shown = [pictures[(n, m, image)] for image in images]
        site.sheets[n].write(out.path(site.map_sheet(n, m)), [list(row) for row in zip(*shown)])


def write_optimised(site, out, cache, model, count, inputs):
    """Pictures optimised to excite each layer's `count` most active maps (zfnet.optimize, the
    default steps and seed 0), made for the maps without one: `{(layer, map): {optimised,
    strongest_photo}}`, their strongest activations on the picture and over the photos. The
    colours are decorrelated with the covariance of the survey's photos."""
    key = [cache["key"], optimize.STEPS]
    if cache.get("optimised", {}).get("key") != key:
        cache["optimised"] = {"key": key, "found": {}}
    found = cache["optimised"]["found"]
    wanted = {n: site.rankings[n][:count] for n in model.conv_layers}
    todo = {
        n: [m for m in maps if (n, m) not in found or missing(out, [site.optimised_picture(n, m)])]
        for n, maps in wanted.items()
    }
    colours = None
    for n, maps in ((n, maps) for n, maps in todo.items() if maps):
        if colours is None:
            colours = optimize.colour_matrix(data.seen(inputs(), site.preprocess))
        with tqdm(total=optimize.STEPS, desc=f"optimising {len(maps)} maps of layer {n}", leave=False) as bar:
            pictures, strengths = optimize.optimise(model, n, maps, site.preprocess, colours, progress=bar.update)
        for m, picture, strength in zip(maps, pictures, strengths.tolist()):
            write_picture(out.path(site.optimised_picture(n, m)), picture)
            found[(n, m)] = {"optimised": strength, "strongest_photo": site.survey["top"][n][0][m, 0].item()}
    return {(n, m): found[(n, m)] for n, maps in wanted.items() for m in maps}


def write_photo_pages(site, out, cache, model, inputs, chosen, listed):
    """The pictures of each chosen photo's page, computed for the photos without them; the
    cache keeps the numbers of the chosen photos only (and the pictures of others go)."""
    site.photos = []
    index = {path: i for i, path in enumerate(site.survey["paths"])}
    for path in tqdm(chosen, desc="photo pages", unit="photo", leave=False):
        photo = site.ids[path]
        entry = cache["photos"].get(photo)
        if entry is None or entry["stamp"] != data.photo_stamp(path) or missing(out, site.photo_files(photo)):
            x = listed[path] if path in listed else inputs()[index[path]]
            numbers, pictures = data.analyse_photo(model, x, path, site.folders)
            entry = {"stamp": data.photo_stamp(path), "path": path, **numbers}
            write_photo_pictures(site, out, photo, data.seen(x[None], site.preprocess)[0], numbers, pictures)
            cache["photos"][photo] = entry
        site.photos.append((path, photo, entry))
    # In the pages' order, which the next build keeps (a photo cached before keeps no old place).
    cache["photos"] = {photo: entry for _, photo, entry in site.photos}
    prune(out.path("img", "photo"), set(cache["photos"]))


def write_photo_pictures(site, out, photo, seen, numbers, pictures):
    files = dict(zip(("whole", *site.model.conv_layers, "a", "b", "c"), site.photo_files(photo)))
    whole = Sheet(seen.shape[-1])
    whole.write(out.path(files["whole"]), [[as_uint8(seen), *map(projection_picture, pictures["class"].values())]])
    for n, rows in pictures["rows"].items():
        site.sheets[n].write(
            out.path(files[n]),
            [[patch_picture(seen, box), *map(projection_picture, projections)] for box, *projections in rows],
        )
    maps = numbers["occlusion"]
    write_map(
        out.path(files["a"]), maps["feature"], "viridis", maps["feature"].min().item(), maps["feature"].max().item()
    )
    write_map(out.path(files["b"]), maps["probability"], "magma", 0, 1)
    write_classes(out.path(files["c"]), maps["prediction"], len(site.classes))


def write_thumbnails(site, out, inputs, listed):
    """A small picture of each photo that a page shows: the chosen and the misclassified."""
    paths = site.survey["paths"]
    wanted = {site.ids[path]: path for path, _, _ in site.photos}
    wanted.update({site.ids[paths[i]]: paths[i] for i in site.misclassified()})
    index = {path: i for i, path in enumerate(paths)}
    for photo, path in wanted.items():
        if missing(out, [site.thumbnail(photo)]):
            x = listed[path] if path in listed else inputs()[index[path]]
            write_picture(out.path(site.thumbnail(photo)), data.seen(x[None], site.preprocess)[0], THUMBNAIL)
    prune(out.path("img", "thumb"), {f"{photo}.jpg" for photo in wanted})


def prune(folder, keep):
    """Remove the entries of `folder` not in `keep` (pictures no page shows any more)."""
    if os.path.isdir(folder):
        for entry in os.scandir(folder):
            if entry.name not in keep:
                remove(entry.path)


def write_evolution(site, out, cache, args, inputs):
    """Figure 4 from the run's snapshots, when it has two or more: `{epochs, maps, found}`
    for the page, or None. The snapshots are loaded only when their figure is not cached."""
    snapshots_folder = os.path.join(os.path.dirname(args.checkpoint) or ".", "snapshots")
    paths = evolution.snapshot_files(snapshots_folder)
    if len(paths) < 2:
        return None
    key = [cache["key"], *(data.file_digest(path) for path in paths)]
    layers = site.model.conv_layers
    entry = cache.get("evolution")
    pictures = [site.evolution_sheet(n) for n in layers] + [site.growth_sheet(n) for n in layers]
    if entry is None or entry["key"] != key or "drift" not in entry or missing(out, pictures):
        device = next(site.model.parameters()).device
        try:
            snapshots, _ = evolution.load_snapshots(paths, snapshots_folder, device, network=site.model.config)
        except UserError as error:
            print(f"note: no evolution page: {error}", file=sys.stderr)
            return None
        strongest = evolution.strongest_places(snapshots, inputs(), layers, args.batch_size)
        shown = {n: site.rankings[n][: data.EVOLUTION_MAPS] for n in layers}
        found = {n: write_growth(site, out, snapshots, inputs(), strongest, n, shown[n]) for n in layers}
        drift = evolution.weight_drift(snapshots, layers)
        entry = cache["evolution"] = {
            "key": key,
            "epochs": [epoch for epoch, _ in snapshots],
            "maps": shown,
            "found": found,
            "drift": {
                n: ([row["from_first"] for row in drift if row["layer"] == n], data.filter_drift(snapshots, n))
                for n in layers
            },
        }
    return entry


def write_growth(site, out, snapshots, inputs, strongest, n, shown):
    """Every map of layer `n` at every snapshot: its strongest activation projected by that
    snapshot's network, small on the layer's growth sheet (a row per map, for the map pages)
    and, for the maps the evolution page `shown`, full size on its sheet. A few maps at a time,
    so that the projections in memory stay few. Returns found (maps, snapshots, 4) of image,
    y, x and value (zfnet.studies.evolution.trace)."""
    found, growth, full = [], [], {}
    every = list(range(len(site.rankings[n])))
    for start in tqdm(range(0, len(every), GROWTH_CHUNK), desc=f"layer {n} across the snapshots", leave=False):
        chunk = every[start : start + GROWTH_CHUNK]
        part, projections, _ = evolution.trace(snapshots, inputs, strongest, {n: chunk}, data.projected)[n]
        found.append(part)
        for m, row in zip(chunk, projections):
            growth.append([small_projection_picture(p, data.GROWTH_TILE) for p in row])
            if m in shown:
                full[m] = [projection_picture(p) for p in row]
    site.sheets[n].write(out.path(site.evolution_sheet(n)), [full[m] for m in shown])
    Sheet(data.GROWTH_TILE).write(out.path(site.growth_sheet(n)), growth)
    return torch.cat(found)


def write_sanity(site, out, cache, model, inputs):
    """The sanity checks (zfnet.studies.sanity) of the top 9 of each layer's most active maps,
    for the sanity page and the map pages: their report, computed once per survey."""
    figures = [site.sanity_figure, site.sanity_example]
    if (cache.get("sanity") or {}).get("format") != sanity.FORMAT or missing(out, figures):
        top = site.survey["top"]
        maps = {n: site.rankings[n][: data.SANITY_MAPS] for n in model.conv_layers}
        requests = [r for n, chosen in maps.items() for r in features.strongest_requests(top[n], n, chosen)]
        needed = sorted({request[0] for request in requests})
        place = {image: i for i, image in enumerate(needed)}
        chosen = inputs()[needed]
        requests = [(place[image], *rest) for image, *rest in requests]
        example = next(i for i, request in enumerate(requests) if request[1] == model.conv_layers[-1])
        found = data.sanity_checks(model, chosen, data.seen(chosen, site.preprocess), requests, example)
        paths = [site.survey["paths"][image] for image in needed]
        cache["sanity"] = sanity.summary(site.checkpoint, site.images, 0, found, paths)
        example_name = os.path.relpath(paths[requests[example][0]])
        sanity.plot(found, out.path(figures[0]), out.path(figures[1]), example_name)
    return cache["sanity"]


def describe_run(site, out, checkpoint_path, checkpoint, model):
    """What the overview says about the run: the checkpoint's own numbers, last.pth's
    settings, train.py's figures (copied in), the layer-1 filters and the other tools' PNGs."""
    run = os.path.dirname(checkpoint_path) or "."
    site.checkpoint_info = checkpoint
    site.train_config = checkpoint.get("train_config")  # last.pth's own, when that is the checkpoint
    last = os.path.join(run, "last.pth")
    if site.train_config is None and os.path.isfile(last):
        try:
            site.train_config = read_checkpoint(last).get("train_config")
        except UserError as error:
            print(f"note: the run's settings are not shown: {error}", file=sys.stderr)
    site.figures = []
    for name in RUN_FIGURES:
        source = os.path.join(run, name)
        if os.path.isfile(source):
            if not os.path.isfile(out.path(name)) or not filecmp.cmp(source, out.path(name), shallow=False):
                shutil.copyfile(source, out.path(name))
            site.figures.append(name)
    weights = model.stage(1).conv.weight
    if missing(out, [site.filters]):
        write_filters(out.path(site.filters), weights)
    site.smoothness = (smoothness(weights.detach().cpu()), noise_smoothness(weights.shape[-1]))
    site.faded = int(faded_filters(weights).sum())
    site.noise_note = features.layer1_note(model)
    site.tools = {tool: sorted(glob.glob(os.path.join(glob.escape(run), tool, "*.png"))) for tool in TOOLS}
    site.tools = {tool: found for tool, found in site.tools.items() if found}


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the files that lie inside its folder and nothing else: a path that resolves
    outside it (through a symbolic link, say) is not found, and a request no file could
    answer (a NUL byte in its path) is a bad request, never a traceback."""

    def send_head(self):
        root = os.path.realpath(self.directory)
        try:
            real = os.path.realpath(self.translate_path(self.path))
        except ValueError:  # a NUL byte: no file has that name
            self.send_error(http.HTTPStatus.BAD_REQUEST, "no file has that name")
            return None
        if os.path.commonpath([real, root]) != root:
            self.send_error(http.HTTPStatus.NOT_FOUND, "not in the site")
            return None
        return super().send_head()


def site_server(folder, port, run):
    """A server on 127.0.0.1 only for the run folder `run` when the site lies in it (the
    default), so that the links to the other tools' figures work, else for the site alone;
    and the site's address on it."""
    site, run = os.path.abspath(folder), os.path.abspath(run)
    root = run if os.path.commonpath([site, run]) == run else site
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(SiteHandler, directory=root))
    path = quote(os.path.relpath(os.path.join(site, "index.html"), root).replace(os.sep, "/"))
    return server, f"http://127.0.0.1:{server.server_address[1]}/{path}"


def serve(folder, port, run):
    """Serve the site (see `site_server`) until Ctrl-C."""
    server, address = site_server(folder, port, run)
    with server:
        print(f"serving on {address} (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")
