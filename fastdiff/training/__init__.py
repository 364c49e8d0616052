"""The diffusion training recipe that made the demo model: ``python -m fastdiff.training
prepare|fit|export`` (see :mod:`fastdiff.training.cli`). Needs the ``train`` extra; ``import fastdiff``
does not import it.

Modules: :mod:`~fastdiff.training.corpus` (source files, split, tokenizer, token streams),
:mod:`~fastdiff.training.data` (data directories and the windows of each step),
:mod:`~fastdiff.training.collator` (masking), :mod:`~fastdiff.training.losses`,
:mod:`~fastdiff.training.config` (the run's settings), :mod:`~fastdiff.training.models`,
:mod:`~fastdiff.training.checkpoint`, :mod:`~fastdiff.training.records` (``run.json``, ``log.jsonl``),
:mod:`~fastdiff.training.loop` (training and evaluation) and :mod:`~fastdiff.training.export`.
"""
