"""The peers of the comparison and how they are run: a FLAP-style baseline (flap), the
Torch-Pruning runner (torch_pruning_runner), their rows at every budget (rows), and the second
process fastnas runs in (lane)."""
