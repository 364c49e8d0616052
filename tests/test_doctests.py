"""The examples in the public docstrings run and print what they show (``doctest``)."""
import doctest
import importlib

import pytest

MODULES = [
    "fastdiff.sampler", "fastdiff.config", "fastdiff.ops", "fastdiff.plan", "fastdiff.step", "fastdiff.graphs",
    "fastdiff.validation", "fastdiff.schedule", "fastdiff.backend", "fastdiff.model", "fastdiff.pretrained",
    "fastdiff.compat", "fastdiff.compat.llada", "fastdiff.compat.dream", "fastdiff.compat.roberta_diffusion",
    "fastdiff.kernels.reference", "fastdiff.kernels.utils", "fastdiff.kernels.torch_fast", "fastdiff.trace",
    "fastdiff.text", "fastdiff.streaming", "fastdiff.noise", "fastdiff.compat.sedd", "fastdiff.compat.mdlm",
    "fastdiff.distributed",
    "fastdiff", "fastdiff.bench.command", "fastdiff.bench.peers", "fastdiff.training.collator",
    "fastdiff.training.corpus", "fastdiff.training.prose",
]
# modules whose public API documents itself with examples
EXAMPLES_EXPECTED = {"fastdiff.sampler", "fastdiff.ops", "fastdiff.compat.llada", "fastdiff.compat.dream"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    examples = 0
    for test in finder.find(module, name, extraglobs={"torch": importlib.import_module("torch")}):
        examples += len(test.examples)
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) of {name} failed (output above)"
    assert examples > 0 or name not in EXAMPLES_EXPECTED, f"{name} lost its examples"


def test_every_module_with_examples_is_listed():
    from pathlib import Path

    import fastdiff

    root = Path(fastdiff.__file__).parent
    with_examples = {".".join(("fastdiff",) + path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                     for path in root.rglob("*.py") if ">>>" in path.read_text()}
    assert with_examples <= set(MODULES), sorted(with_examples - set(MODULES))
