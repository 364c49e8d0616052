"""The model a run trains (loaded to fine-tune, or built from scratch) and its AdamW optimizer."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from fastdiff.model import ModelRunner
from fastdiff.training.config import TrainConfig
from fastdiff.training.data import INIT_STREAM, derive_seed


def auto_model_class(objective: str):
    """``AutoModelForMaskedLM`` for ``"diffusion"``, ``AutoModelForCausalLM`` for ``"causal"``."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForMaskedLM if objective == "diffusion" else AutoModelForCausalLM


def build_model(config: TrainConfig, tokenizer, base_token_ids: Optional[Sequence[int]] = None):
    """The model a run starts from: ``init_from`` loaded offline, or a fresh one seeded from ``seed``.

    From scratch: the config's ``architecture`` with ``seq_length`` positions (after RoBERTa's padding
    offset) and the tokenizer's vocabulary and special-token ids. Fine-tuned: a head the checkpoint
    lacks (an encoder saved without its MLM head) is initialised from ``seed``, tied to the word
    embeddings as the model's config says; with ``base_token_ids`` (a pruned tokenizer's base id of
    each token) only those rows of the vocabulary are kept (:func:`keep_vocabulary`).
    """
    if config.init_from is not None:
        torch.manual_seed(derive_seed(config.seed, INIT_STREAM))
        model = auto_model_class(config.objective).from_pretrained(config.init_from, local_files_only=True,
                                                                   dtype=torch.float32)
        if base_token_ids is not None:
            keep_vocabulary(model, base_token_ids)
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(f"init_from's vocabulary ({model.config.vocab_size}) is smaller than the "
                             f"tokenizer's ({len(tokenizer)}); prepare the data with its tokenizer")
    else:
        model = _new_model(config, tokenizer)
    limit = ModelRunner(model).max_length
    if limit is not None and config.seq_length > limit:
        raise ValueError(f"seq_length ({config.seq_length}) exceeds the model's {limit} positions")
    return model


def keep_vocabulary(model, token_ids: Sequence[int]) -> None:
    """Cut ``model``'s vocabulary to the rows ``token_ids`` (new id ``i`` is old id ``token_ids[i]``), in
    place: the input embeddings, the output projection and its bias (tied weights stay tied)."""
    index = torch.as_tensor(list(token_ids), dtype=torch.long)
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= model.config.vocab_size:
        raise ValueError(f"base_token_ids must be ids below the model's vocabulary ({model.config.vocab_size})")
    embeddings = model.get_input_embeddings()
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embeddings.weight
    kept = {int(old): new for new, old in enumerate(index.tolist())}
    pad = kept.get(model.config.pad_token_id)
    new_embeddings = torch.nn.Embedding(len(index), embeddings.embedding_dim, padding_idx=pad)
    new_embeddings.weight.data = embeddings.weight.data[index].clone()
    model.set_input_embeddings(new_embeddings)
    if output is not None:
        new_output = torch.nn.Linear(output.in_features, len(index), bias=output.bias is not None)
        new_output.weight = new_embeddings.weight if tied else torch.nn.Parameter(output.weight.data[index].clone())
        if output.bias is not None:
            new_output.bias = torch.nn.Parameter(output.bias.data[index].clone())
        model.set_output_embeddings(new_output)
    model.config.vocab_size = len(index)
    model.config.pad_token_id = pad


def _new_model(config: TrainConfig, tokenizer):
    """A model of the config's architecture, initialised from ``seed``."""
    from transformers import (GPT2Config, GPT2LMHeadModel, ModernBertConfig, ModernBertForMaskedLM, RobertaConfig,
                              RobertaForMaskedLM)

    torch.manual_seed(derive_seed(config.seed, INIT_STREAM))
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    architecture = config.architecture or ("modernbert" if config.objective == "diffusion" else "gpt2")
    if architecture == "modernbert":
        rope = {"rope_type": "default", "rope_theta": 10000.0}
        return ModernBertForMaskedLM(ModernBertConfig(
            vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
            max_position_embeddings=config.seq_length, layer_types=["full_attention"] * config.num_layers,
            rope_parameters={"full_attention": rope, "sliding_attention": rope},
            attention_dropout=config.dropout, embedding_dropout=config.dropout, mlp_dropout=config.dropout,
            initializer_range=config.initializer_range, cls_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.eos_token_id, **ids))
    if architecture == "roberta":
        return RobertaForMaskedLM(RobertaConfig(
            vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
            max_position_embeddings=config.seq_length + tokenizer.pad_token_id + 1, type_vocab_size=1,
            hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
            initializer_range=config.initializer_range, **ids))
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_embd=config.hidden_size, n_layer=config.num_layers,
        n_head=config.num_heads, n_inner=config.intermediate_size, n_positions=config.seq_length,
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        initializer_range=config.initializer_range, **ids))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases, norms or other 1-D parameters)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.dim() < 2 or "norm" in name.lower() else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.adam_betas), eps=config.adam_eps,
                             foreach=False)
