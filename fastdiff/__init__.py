"""fastdiff: fast sampling for masked (absorbing-state) diffusion language models.

>>> from fastdiff import Sampler
>>> sampler = Sampler(model, mask_token_id=tokenizer.mask_token_id, steps=24)   # doctest: +SKIP
>>> out = sampler.generate(prompt_ids, gen_length=240)                          # doctest: +SKIP
"""
from fastdiff import ops
from fastdiff.config import SamplerConfig
from fastdiff.sampler import GenerationOutput, Sampler

__version__ = "0.1.0"

__all__ = ["Sampler", "SamplerConfig", "GenerationOutput", "ops", "__version__"]
