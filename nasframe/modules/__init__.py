"""Dynamic versions of PyTorch's module kinds, one file each: linear, embedding, norms,
attention (the computation with its masks in attention_kernel) and depth (a list of layers of
which only the kept ones run)."""
