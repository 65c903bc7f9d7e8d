"""Dynamic versions of PyTorch's module kinds, one file each: linear, embedding, norms,
attention and depth (a list of layers of which only the kept ones run)."""
