"""Thin factories behind the torch.hub entrypoints, one module per model family."""
