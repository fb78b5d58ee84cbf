"""explore.py's static site: `data` computes what it shows (one forward pass over the photos,
the photo pages' analyses, figure 4) and caches it, `pictures` writes the tiles, sheets and
maps, `pages` the HTML, `build` puts them together (and serves the site)."""
