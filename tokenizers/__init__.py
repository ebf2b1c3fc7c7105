"""The byte-pair-encoding tokenizers of GPT and GPT-2."""
