"""Kernels of this library's own, in C, for batch-1 decoding (and a few bfloat16 rows where oneDNN
has no bfloat16 product): compiled on the user's machine at
first use (``build.py``), wrapped as products (``products.py``), a whole block's step
(``block.py``), the body's and greedy decoding's steps (``decoder.py``), the final norm
(``norm.py``) and greedy decoding's argmax (``argmax.py``). docs/internals.md lists the C files."""
