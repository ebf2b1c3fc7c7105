"""torch.hub entrypoints for OpenAI GPT (openai-gpt) and GPT-2 (gpt2, gpt2-medium, gpt2-large,
gpt2-xl, distilgpt2).

    import torch
    model = torch.hub.load('<owner>/<repo>', 'gpt2LMHeadModel', 'gpt2', trust_repo=True)

(``<owner>/<repo>``: the GitHub owner/name this repository is published under; a clone loads with
its path and ``source='local'``.) ``python hubconf.py --help`` is the command line (``cli/``).

The code lives in the packages ``models``, ``tokenizers``, ``download``, ``training``, ``hubconfs`` and
``cli`` (and the modules ``errors`` and ``locks``). Those
names are common (Hugging Face's ``tokenizers``; other hub repositories' ``models``), so they are
imported here under a private parent package, never as top-level modules: loading this
repository neither shadows nor is shadowed by anything else in the process.
"""

import hashlib as _hashlib
import importlib as _importlib
import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys

dependencies = ["torch", "regex", "requests", "numpy", "safetensors"]


def _repository_package():
    """This folder as a package named after its path, made once per process."""
    root = _os.path.dirname(_os.path.realpath(__file__))
    name = "_gpt_hub_" + _hashlib.sha256(root.encode("utf-8")).hexdigest()[:16]
    if name not in _sys.modules:
        spec = _machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [root]
        _sys.modules[name] = _util.module_from_spec(spec)
    return name


_PACKAGE = _repository_package()
if __name__ == "__main__":  # the command line: parse the arguments before anything imports torch
    _sys.exit(_importlib.import_module(_PACKAGE + ".cli.main").main())

_gpt = _importlib.import_module(_PACKAGE + ".hubconfs.gpt_hubconf")
_gpt2 = _importlib.import_module(_PACKAGE + ".hubconfs.gpt2_hubconf")

openAIGPTTokenizer = _gpt.openAIGPTTokenizer
openAIGPTConfig = _gpt.openAIGPTConfig
openAIGPTModel = _gpt.openAIGPTModel
openAIGPTLMHeadModel = _gpt.openAIGPTLMHeadModel
openAIGPTDoubleHeadsModel = _gpt.openAIGPTDoubleHeadsModel
openAIGPTForSequenceClassification = _gpt.openAIGPTForSequenceClassification

gpt2Tokenizer = _gpt2.gpt2Tokenizer
gpt2Config = _gpt2.gpt2Config
gpt2Model = _gpt2.gpt2Model
gpt2LMHeadModel = _gpt2.gpt2LMHeadModel
gpt2DoubleHeadsModel = _gpt2.gpt2DoubleHeadsModel
gpt2ForSequenceClassification = _gpt2.gpt2ForSequenceClassification
gpt2ForTokenClassification = _gpt2.gpt2ForTokenClassification
gpt2ForQuestionAnswering = _gpt2.gpt2ForQuestionAnswering

