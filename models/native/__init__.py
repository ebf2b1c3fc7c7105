"""Kernels of this library's own, in C, for the products of batch-1 decoding: compiled on the
user's machine at first use (``build.py``), wrapped as products (``products.py``)."""
