"""Fine-tuning: language modelling and multiple choice, on one process or under torchrun."""

from .data import MC_TOKENS, DataError, add_choice_tokens, check_readable, encode_choices, lm_blocks, read_choices
from .loop import Options, Ranks, Rows, Task, TrainingError, evaluate, start_distributed, train
from .state import check_output_dir, check_resumable
from .tasks import language_modelling, multiple_choice

__all__ = ["MC_TOKENS", "DataError", "add_choice_tokens", "check_readable", "encode_choices", "lm_blocks", "read_choices", "Options",
           "Ranks", "Rows", "Task", "TrainingError", "evaluate", "start_distributed", "train", "language_modelling",
           "multiple_choice", "check_output_dir", "check_resumable"]
