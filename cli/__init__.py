"""``python hubconf.py COMMAND``: the repository's command line (``generate``, ``score``,
``example``, ``finetune-lm``, ``finetune-mc``; see ``python hubconf.py --help``).

Not an entrypoint factory: torch.hub never sees it. Nothing is imported from torch until a command
runs, so ``--help`` and argument errors answer at once.
"""
