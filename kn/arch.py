"""The per-family table: where each architecture keeps its FFN neurons.

Every kernel reaches into a model through one `Family` row. The neuron site is always the
*input* of the FFN output projection (post-activation; for gated FFNs act(gate) * up), and the
value slot of neuron i is the i-th input column of that projection.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Family:
    """One architecture family.

    name: display name.
    model_types: `config.model_type` values that belong to the family.
    layers: attribute path from the LM-head model to the list of transformer blocks.
    down_proj: attribute path inside a block to the FFN output projection (the neuron site is its input).
    weight_layout: "out_in" for `nn.Linear` (weight [hidden, width]) or "in_out" for GPT-2's Conv1D
        (weight [width, hidden]).
    masked: masked LM (predicts at `[MASK]`) or causal LM (predicts the next token).
    post_ffn_norm: attribute path inside a block to a norm applied to the FFN output before it joins
        the residual stream (Gemma-2/3), or None. Its scale is frozen along the IG path (see attribution).
    fanout: the block accepts a batch-1 residual stream expanded to the path batch at any layer (its
        per-layer extras, e.g. attention masks and rotary tables, broadcast). BLOOM's alibi does not.
    flat_ffn: the FFN sees the block's input flattened to [batch * seq, hidden] (OPT).
    residual_norm: attribute path inside a block to a norm applied *after* the FFN output is added to
        the residual stream (post-LN blocks: BERT's output LayerNorm), or None (pre-LN blocks).
    residual_norm_off: a block attribute that, when true, makes the block pre-LN after all (OPT's
        `do_layer_norm_before`; the post-LN variant is OPT-350m).
    ffn_in: masked LMs: attribute path inside a block to the FFN's first module, whose input is the
        stream after attention and whose output is added back per position; in the last block the
        fast path feeds it the answer position only.
    final_norm: causal LMs: attribute path from the LM-head model to the norm between the last block
        and the output layer (`kn.logprob` projects a layer's residual stream through it), or None.
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    down_proj: str
    weight_layout: str = "out_in"
    masked: bool = False
    post_ffn_norm: str | None = None
    fanout: bool = True
    flat_ffn: bool = False
    residual_norm: str | None = None
    residual_norm_off: str | None = None
    ffn_in: str | None = None
    final_norm: str | None = None


FAMILIES: tuple[Family, ...] = (
    Family("BERT", ("bert",), "bert.encoder.layer", "output.dense", masked=True,
           residual_norm="output.LayerNorm", ffn_in="intermediate"),
    Family("RoBERTa", ("roberta",), "roberta.encoder.layer", "output.dense", masked=True,
           residual_norm="output.LayerNorm", ffn_in="intermediate"),
    Family("XLM-R", ("xlm-roberta",), "roberta.encoder.layer", "output.dense", masked=True,
           residual_norm="output.LayerNorm", ffn_in="intermediate"),
    Family("DistilBERT", ("distilbert",), "distilbert.transformer.layer", "ffn.lin2", masked=True,
           residual_norm="output_layer_norm", ffn_in="ffn"),
    Family("ELECTRA", ("electra",), "electra.encoder.layer", "output.dense", masked=True,
           residual_norm="output.LayerNorm", ffn_in="intermediate"),
    Family("GPT-2", ("gpt2",), "transformer.h", "mlp.c_proj", weight_layout="in_out", final_norm="transformer.ln_f"),
    Family("GPT-NeoX", ("gpt_neox",), "gpt_neox.layers", "mlp.dense_4h_to_h", final_norm="gpt_neox.final_layer_norm"),
    Family("BLOOM", ("bloom",), "transformer.h", "mlp.dense_4h_to_h", fanout=False, final_norm="transformer.ln_f"),
    Family("OPT", ("opt",), "model.decoder.layers", "fc2", flat_ffn=True,
           residual_norm="final_layer_norm", residual_norm_off="do_layer_norm_before",
           final_norm="model.decoder.final_layer_norm"),
    Family("Llama", ("llama",), "model.layers", "mlp.down_proj", final_norm="model.norm"),
    Family("Mistral", ("mistral",), "model.layers", "mlp.down_proj", final_norm="model.norm"),
    Family("Qwen2", ("qwen2",), "model.layers", "mlp.down_proj", final_norm="model.norm"),
    Family("Gemma", ("gemma",), "model.layers", "mlp.down_proj", final_norm="model.norm"),
    Family("Gemma-2", ("gemma2",), "model.layers", "mlp.down_proj", post_ffn_norm="post_feedforward_layernorm",
           final_norm="model.norm"),
    Family("Gemma-3", ("gemma3_text",), "model.layers", "mlp.down_proj", post_ffn_norm="post_feedforward_layernorm",
           final_norm="model.norm"),
)


class UnsupportedModelError(ValueError):
    """The model's architecture has no row in the family table."""


def supported() -> str:
    return ", ".join(f.name for f in FAMILIES)


def family_for_type(model_type: str | None) -> Family:
    """The family row for a `config.model_type`; UnsupportedModelError names the supported families."""
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not supported; supported families: {supported()}. "
        "A new family is one row in kn.arch.FAMILIES."
    )


def family_of(model: nn.Module) -> Family:
    """The family row for `model` (an LM-head model: *ForMaskedLM / *ForCausalLM)."""
    fam = family_for_type(getattr(getattr(model, "config", None), "model_type", None))
    try:
        get_path(model, fam.layers)
    except AttributeError:
        raise UnsupportedModelError(
            f"{type(model).__name__} is a {fam.name} model but not the LM-head class kn needs "
            f"(no `{fam.layers}`); load it with AutoModelFor{'MaskedLM' if fam.masked else 'CausalLM'}."
        ) from None
    return fam


def get_path(root: nn.Module, path: str) -> nn.Module:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def blocks(model: nn.Module, fam: Family) -> list[nn.Module]:
    return list(get_path(model, fam.layers))


def down_proj(model: nn.Module, fam: Family, layer: int) -> nn.Module:
    return get_path(blocks(model, fam)[layer], fam.down_proj)


def post_ffn_norm(model: nn.Module, fam: Family, layer: int) -> nn.Module | None:
    return None if fam.post_ffn_norm is None else get_path(blocks(model, fam)[layer], fam.post_ffn_norm)


def residual_norm(model: nn.Module, fam: Family, layer: int) -> nn.Module | None:
    """The norm a block applies after adding its FFN output to the residual stream (post-LN), or None.

    A block's output at a position is `N(r + T(site))`: r the residual part, T the FFN tail (output
    projection, then `post_ffn_norm` if any), N this norm (identity when None).
    """
    if fam.residual_norm is None:
        return None
    block = blocks(model, fam)[layer]
    if fam.residual_norm_off and getattr(block, fam.residual_norm_off, False):
        return None
    return get_path(block, fam.residual_norm)


def final_norm(model: nn.Module, fam: Family) -> nn.Module | None:
    """The norm between the last block and the output layer, or None (masked LMs; a model built without one)."""
    return None if fam.final_norm is None else get_path(model, fam.final_norm)


def ffn_in(model: nn.Module, fam: Family, layer: int) -> nn.Module | None:
    return None if fam.ffn_in is None else get_path(blocks(model, fam)[layer], fam.ffn_in)


def width(model: nn.Module, fam: Family) -> int:
    w = down_proj(model, fam, 0).weight
    return w.shape[1] if fam.weight_layout == "out_in" else w.shape[0]


def value_slots(model: nn.Module, fam: Family, layer: int) -> torch.Tensor:
    """Value slots of a layer as a view [width, hidden]: row i is what neuron i writes (per unit activation)."""
    w = down_proj(model, fam, layer).weight
    return w.t() if fam.weight_layout == "out_in" else w
