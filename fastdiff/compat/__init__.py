"""Drop-in replacements for the sampling functions of other diffusion-LM code bases.

Each keeps the signature, defaults and return type of the code it replaces, and runs on
:class:`fastdiff.Sampler` (so on CUDA they get the fused Triton kernels, and CUDA graphs once the
Sampler has them):

* :func:`fastdiff.compat.llada.generate`: LLaDA's ``generate`` (``generate.py`` of ML-GSAI/LLaDA).
* :func:`fastdiff.compat.llada.fast_dllm_generate`: Fast-dLLM's LLaDA ``generate`` (``threshold`` /
  ``factor`` parallel decoding, returning ``(x, nfe)``).
* :func:`fastdiff.compat.dream.diffusion_generate`: Dream's ``model.diffusion_generate``
  (``DreamGenerationMixin`` in the Dream model repositories' ``generation_utils.py``), with Fast-dLLM's
  ``alg="confidence_threshold"`` and keywords.
* :func:`fastdiff.compat.roberta_diffusion.prepare_prompt` and
  :func:`fastdiff.compat.roberta_diffusion.generate`: RoBERTaDiffusion's ``inference.py`` (Nathan
  Barry): its confidence sampler with its ``Config``, the blog post's resample and re-mask loop with
  ``BlogConfig``; ``generate_confident`` / ``generate_ancestral`` are keyword-style variants.
* :func:`fastdiff.compat.sedd.get_pc_sampler`: SEDD's ``sampling.get_pc_sampler`` (absorbing graph;
  Euler and analytic predictors, ``denoise``, ``proj_fun``).
* :func:`fastdiff.compat.mdlm.sample`: MDLM's ``Diffusion._sample`` (``ddpm``, ``ddpm_cache``,
  ``analytic``; noise removal).

Greedy settings give exactly the reference's tokens on fp32 models (the stochastic samplers of SEDD,
MDLM and the RoBERTa-diffusion blog: the same law, fastdiff's random streams); each module's docstring
lists where, and why, fastdiff differs from the code it replaces.

Every function keeps one :class:`~fastdiff.Sampler` per model and settings, so repeated calls reuse
it. The cache never keeps a model alive: it is keyed by a weak reference to the model, and the cached
Samplers hold their model weakly too.

>>> from fastdiff.compat import llada                                     # doctest: +SKIP
>>> out = llada.generate(model, prompt, steps=128, gen_length=128, block_length=32)  # doctest: +SKIP
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Callable, Dict

from fastdiff.config import SamplerConfig
from fastdiff.model import ModelRunner
from fastdiff.sampler import Sampler

# Settings kept per model: a sweep over many settings reuses the most recent ones only.
SAMPLERS_PER_MODEL = 8

_samplers: "weakref.WeakKeyDictionary[object, OrderedDict]" = weakref.WeakKeyDictionary()


class WeakModelRunner(ModelRunner):
    """A :class:`~fastdiff.model.ModelRunner` that holds its model by weak reference.

    A cached :class:`~fastdiff.Sampler` built on it does not keep the model alive, so the cache entry
    (keyed weakly by the model) goes away with the model. Models that cannot be weakly referenced are
    held normally (and never cached).
    """

    @property
    def model(self):
        return self._model_ref()

    @model.setter
    def model(self, model):
        try:
            self._model_ref = weakref.ref(model)
        except TypeError:
            self._model_ref = lambda: model


def cached_sampler(model, family: str, runner: Callable[[], ModelRunner], mask_token_id: int,
                   settings: Dict[str, object]) -> Sampler:
    """The :class:`~fastdiff.Sampler` of a drop-in generator, cached for ``(model, family, mask token,
    settings)`` and built on a miss.

    Args:
        model: the user's model; the cache holds it weakly. Models that cannot be weakly referenced
            or hashed are not cached (a Sampler is built on every call).
        family: the drop-in's name (part of the key).
        runner: makes the model runner (a :class:`WeakModelRunner` or a subclass).
        mask_token_id: the mask token.
        settings: the :class:`~fastdiff.SamplerConfig` fields the drop-in sets; they are part of the
            key, and checked when a Sampler is built for them (errors name them).

    Returns:
        The Sampler. At most :data:`SAMPLERS_PER_MODEL` are kept per model, least recently used first out.
    """
    def build() -> Sampler:
        return Sampler(runner(), mask_token_id=mask_token_id, config=SamplerConfig().replace(**settings))

    key = (family, mask_token_id, tuple(sorted(settings.items())))
    try:
        hash(key)
        per_model = _samplers.get(model)
        if per_model is None:
            per_model = _samplers[model] = OrderedDict()
    except TypeError:  # not weakly referenceable, or not hashable (the model or a setting)
        return build()
    sampler = per_model.get(key)
    if sampler is None:
        sampler = per_model[key] = build()
        if len(per_model) > SAMPLERS_PER_MODEL:
            per_model.popitem(last=False)
    else:
        per_model.move_to_end(key)
    return sampler


from fastdiff.compat import dream, llada, mdlm, roberta_diffusion, sedd  # noqa: E402  (they use the helpers above)

__all__ = ["llada", "dream", "mdlm", "roberta_diffusion", "sedd", "cached_sampler", "WeakModelRunner", "SAMPLERS_PER_MODEL"]
