"""Every checkpoint format, fuzzed: a few hundred mutants of a valid checkpoint each, and each must
load or be refused with an error of this library (tests/fuzz_checkpoints.py; run that script for
longer campaigns)."""

import logging

import pytest
from fuzz_checkpoints import FORMATS, fuzz

MUTANTS = {"safetensors": 300, "safetensors-int4": 150, "bin": 200, "tf": 300, "npy": 200}


@pytest.mark.parametrize("name", list(FORMATS))
def test_mutants_load_or_are_refused_clearly(name, caplog):
    caplog.set_level(logging.ERROR)  # mutants that load often log unused or new weights
    outcomes = fuzz(FORMATS[name], MUTANTS[name], seed=0)
    assert outcomes["refused"] > 0, outcomes  # the mutations reach the parsers
