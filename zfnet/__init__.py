"""Shared pieces of the zfnet scripts: data, checkpoints, figures and the deconvnet."""
