"""Tiny random models of every supported family, built offline (tests, benchmarks' checks, examples)."""
from __future__ import annotations

import torch

from .models import LM, wrap

WORDS = (
    "Paris is the capital of France Berlin Germany Rome Italy Madrid Spain London England Tokyo Japan "
    "city country language speaks French German Italian Spanish English Japanese in a an and was born "
    "located official currency euro yen pound . , its on continent Europe Asia which where"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<bos>", "<eos>"]

# family name -> (config class name, config kwargs for a tiny model)
_SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48)
TINY: dict[str, tuple[str, dict]] = {
    "BERT": ("BertConfig", dict(_SMALL, max_position_embeddings=64)),
    "RoBERTa": ("RobertaConfig", dict(_SMALL, max_position_embeddings=70)),
    "XLM-R": ("XLMRobertaConfig", dict(_SMALL, max_position_embeddings=70)),
    "DistilBERT": ("DistilBertConfig", dict(dim=32, n_layers=3, n_heads=2, hidden_dim=48, max_position_embeddings=64)),
    "ELECTRA": ("ElectraConfig", dict(_SMALL, embedding_size=32, max_position_embeddings=64)),
    "GPT-2": ("GPT2Config", dict(n_embd=32, n_layer=3, n_head=2, n_inner=48, n_positions=64)),
    "GPT-NeoX": ("GPTNeoXConfig", dict(_SMALL, max_position_embeddings=64)),
    "BLOOM": ("BloomConfig", dict(hidden_size=32, n_layer=3, n_head=2)),
    "OPT": ("OPTConfig", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, ffn_dim=48,
                              word_embed_proj_dim=32, max_position_embeddings=64)),
    "Llama": ("LlamaConfig", dict(_SMALL, num_key_value_heads=1, max_position_embeddings=64)),
    "Mistral": ("MistralConfig", dict(_SMALL, num_key_value_heads=1, max_position_embeddings=64)),
    "Qwen2": ("Qwen2Config", dict(_SMALL, num_key_value_heads=1, max_position_embeddings=64)),
    "Gemma": ("GemmaConfig", dict(_SMALL, num_key_value_heads=1, head_dim=16, max_position_embeddings=64)),
    "Gemma-2": ("Gemma2Config", dict(_SMALL, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                                     sliding_window=32, query_pre_attn_scalar=16)),
    "Gemma-3": ("Gemma3TextConfig", dict(_SMALL, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                                         sliding_window=32, query_pre_attn_scalar=16,
                                         layer_types=["sliding_attention", "sliding_attention", "full_attention"])),
}
MASKED = ("BERT", "RoBERTa", "XLM-R", "DistilBERT", "ELECTRA")


def tiny_tokenizer(masked: bool):
    """A word-level tokenizer over WORDS; masked: [CLS] x [SEP]; causal: <bos> x."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + list(dict.fromkeys(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if masked:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    else:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]", cls_token="[CLS]",
        sep_token="[SEP]", bos_token="<bos>", eos_token="<eos>")


def tiny_lm(family: str = "GPT-2", seed: int = 0, **overrides) -> LM:
    """A tiny random `LM` of `family` (a key of TINY), deterministic for a seed."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    cls_name, kwargs = TINY[family]
    masked = family in MASKED
    tok = tiny_tokenizer(masked)
    ids = dict(pad_token_id=0, bos_token_id=5, eos_token_id=6)
    config = getattr(transformers, cls_name)(vocab_size=len(tok), **ids, **{**kwargs, **overrides})
    torch.manual_seed(seed)
    auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    model = auto.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # random init of norms is the identity; perturb so norms do something
        for name, p in model.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return wrap(model, tok, name=f"tiny-{family}")


def kill_when(child, ready, timeout: float = 120.0) -> None:
    """SIGKILL the subprocess `child` (a `subprocess.Popen`) as soon as `ready()` is true; it must still
    be running then (AssertionError, with its output, if it ended first)."""
    import signal
    import time

    deadline = time.time() + timeout
    try:
        while time.time() < deadline and child.poll() is None and not ready():
            time.sleep(0.05)
        assert child.poll() is None, f"the child ended before the kill: {child.communicate()}"
        assert ready(), f"the child was not ready for the kill within {timeout} s"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
