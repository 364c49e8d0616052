"""The ``fastdiff`` command line (also ``python -m fastdiff``).

Commands:

* ``fastdiff demo`` (the default when no command is given): with the demo model bundled in the
  package, on the CPU and offline, continue an English prompt and fill the blanks of a sentence;
  prints the text and the timings.
* ``fastdiff generate TEXT``: generate after a prompt, or fill the ``[MASK]`` / ``[MASK*N]`` holes of an
  infill template. Every :class:`fastdiff.SamplerConfig` option is a flag.
* ``fastdiff trace TEXT``: one generation's trajectory as an animated GIF, a self-contained HTML page
  with a step slider, or an in-place animation in the terminal (``--terminal``).
* ``fastdiff bench``: the benchmark suite (:mod:`fastdiff.bench`): fastdiff against GPT-2 and naive
  diffusion loops.

Errors (bad flags, a missing model, an option value the sampler rejects) print one line and exit with
status 2 (1 when a model directory cannot be loaded); Ctrl-C exits with status 130.

Example:
    $ fastdiff generate "The configuration file" --gen-length 48      # the bundled demo model
    $ fastdiff generate --model ./my-roberta-diffusion "The capital of France is" --gen-length 32 --steps 16
    $ fastdiff generate --model ./my-roberta-diffusion "A [MASK*12] jumped over the lazy dog." --json
    $ fastdiff trace --model ./my-roberta-diffusion "Once upon a time" -o trace.gif -o trace.html
"""
from fastdiff.cli.commands import DEMO_PROMPT, DEMO_SAMPLER, DEMO_TEMPLATE, config_from_args, main, run_generation
from fastdiff.cli.inputs import EncodedText, encode_input, load_model, resolve_device, resolve_dtype, token_text_fn
from fastdiff.cli.parser import CLIError, build_parser, sampler_fields

__all__ = ["main", "build_parser", "CLIError", "sampler_fields", "encode_input", "EncodedText", "token_text_fn",
           "load_model", "resolve_device", "resolve_dtype", "run_generation", "config_from_args", "DEMO_PROMPT",
           "DEMO_SAMPLER", "DEMO_TEMPLATE"]
