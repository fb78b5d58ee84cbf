"""The paper's experiments, one module each, each the same shape: OUTPUTS (the names it
writes), a compute step, `plot` (its figure) and a report (its table or findings in words).
docs/design.md lists them with the scripts that run them."""
