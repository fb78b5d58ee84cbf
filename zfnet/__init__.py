"""What the zfnet scripts share, in three layers (imports point down only):

- zfnet.studies: the paper's experiments, one module each;
- zfnet.site: the explorer (explore.py), its pages in Jinja2 templates;
- zfnet itself: the methods (deconv, projections, top9, spectra), training (recipes, resume,
  training, data, splitting, checkpoint, predicting) and plumbing (arguments, images, files,
  outputs, errors, figures, tables, runtime); below them all, model.py.

docs/design.md describes the layout and where a new study or page goes.
"""
