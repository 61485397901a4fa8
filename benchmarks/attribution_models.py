"""The attribution benchmark's shared setup (benchmarks/bench_attribution.py): prompts, offline
tokenizers, random-init models of real size (or tiny) with fixed seeds, their checkpoints, and the
relative error every comparison uses. Used by the driver and by both kinds of worker, so its module
level imports nothing but the standard library.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

SEED = 0
STEPS = 20
BATCH = 20  # the package's batch size (steps % batch == 0 is required by it)

# Short prompts, masked form; the causal form is the text before " [MASK]" (the object comes last).
FACTS = [
    ("Paris is the capital of [MASK].", "France"),
    ("The official language of Brazil is [MASK].", "Portuguese"),
    ("Albert Einstein was born in the country of [MASK].", "Germany"),
    ("The Eiffel Tower is located in the city of [MASK].", "Paris"),
    ("Mount Fuji is the highest mountain in [MASK].", "Japan"),
]

# One fact's paraphrases (masked form, object last): the whole-fact comparison (benchmarks/bench_fast.py).
PARAPHRASES = ([
    "Paris is the capital of [MASK].",
    "Paris is the capital city of [MASK].",
    "The city of Paris is the capital of [MASK].",
    "Paris serves as the capital of [MASK].",
    "Paris, the capital of [MASK].",
], "France")

FAMILIES = ("bert", "gpt2", "gemma")
LABEL = {"bert": "BERT-base (bert-base-cased config)", "gpt2": "GPT-2 small", "gemma": "gemma-3-270m"}
TINY_LABEL = {"bert": "tiny BERT", "gpt2": "tiny GPT-2", "gemma": "tiny Gemma-3"}
PEER_TYPE = {"bert": "bert", "gpt2": "gpt"}  # families the package supports, and its model_type


def prompts(family: str, n: int | None = None) -> list[tuple[str, str]]:
    """(prompt, answer) pairs in the form the family takes (masked: with [MASK]; causal: prefix)."""
    out = []
    for masked, answer in FACTS[:n]:
        out.append((masked, answer) if family == "bert" else (masked.split(" [MASK]")[0], answer))
    return out


def paraphrases(family: str) -> tuple[list[str], str]:
    """One fact's paraphrases in the family's form, and its answer."""
    qs, answer = PARAPHRASES
    return [q if family == "bert" else q.split(" [MASK]")[0] for q in qs], answer


def peer_answer(family: str, answer: str) -> str:
    """The package encodes a causal answer on its own: the leading space is part of the token."""
    return answer if family == "bert" else " " + answer


def _words() -> list[str]:
    seen = {}
    for prompt, answer in FACTS + [(q, PARAPHRASES[1]) for q in PARAPHRASES[0]]:
        for w in re.findall(r"\w+|[^\w\s]", prompt.replace("[MASK]", " ") + " " + answer):
            seen[w] = None
    return list(seen)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def build_tokenizer(family: str, vocab_size: int):
    """A `tokenizers.Tokenizer` made offline, covering the benchmark's words, padded to vocab_size.

    bert: cased WordPiece, [CLS] x [SEP]; gpt2: byte-level BPE, no special tokens added;
    gemma: byte-level BPE with <bos> prepended (as Gemma's tokenizer does). Every word of the
    prompts and answers is one token (checked), so answers are single tokens on both sides.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    words = _words()
    initial = list(dict.fromkeys(p.split()[0].strip(",") for p in [p for p, _ in FACTS] + PARAPHRASES[0]))
    if family == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        vocab = {t: i for i, t in enumerate(specials + words)}
        for i in range(len(vocab), vocab_size):
            vocab[f"[unused{i}]"] = i
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        tok.decoder = decoders.WordPiece()
        tok.add_special_tokens(specials)
    else:
        b2u = _bytes_to_unicode()
        specials = ["<|endoftext|>"] if family == "gpt2" else ["<pad>", "<eos>", "<bos>", "<unk>"]
        vocab: dict[str, int] = {}
        for t in (specials if family == "gemma" else []) + [b2u[b] for b in range(256)]:
            vocab.setdefault(t, len(vocab))
        merges: list[tuple[str, str]] = []
        # space-prefixed forms first (their merges must outrank the bare forms'); bare forms only for
        # the words that start a prompt (or they would split each other)
        for form in ["Ġ" + w for w in words] + initial:
            form = "".join(b2u[b] for b in form.replace("Ġ", " ").encode())
            for i in range(1, len(form)):
                pair = (form[:i], form[i])
                if form[: i + 1] not in vocab:
                    vocab[form[: i + 1]] = len(vocab)
                    merges.append(pair)
        for i in range(len(vocab), vocab_size - (family == "gpt2")):
            vocab[f"<unused{i}>"] = i
        if family == "gpt2":  # GPT-2 keeps <|endoftext|> last (50256)
            vocab["<|endoftext|>"] = len(vocab)
        tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        if family == "gemma":
            tok.post_processor = processors.TemplateProcessing(
                single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
        tok.add_special_tokens(specials)
    if len(vocab) > vocab_size:
        raise ValueError(f"{family}: the tokenizer needs {len(vocab)} tokens > vocab_size {vocab_size}")
    for w in words:
        texts = [w] if family == "bert" else [" " + w] + ([w] if w in initial else [])
        for text in texts:
            pieces = tok.encode(text, add_special_tokens=False).tokens
            if len(pieces) != 1:
                raise AssertionError(f"{family}: {text!r} is not one token: {pieces}")
    return tok


TOKENIZER_SPECIALS = {
    "bert": dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                 mask_token="[MASK]"),
    "gpt2": dict(unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>"),
    "gemma": dict(pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"),
}


def hf_tokenizer(family: str, tokenizer_file: str | Path | None = None, vocab_size: int | None = None):
    """A transformers tokenizer (4.x and 5.x alike) from a saved tokenizer.json or built in memory."""
    from transformers import PreTrainedTokenizerFast

    if tokenizer_file is not None:
        return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), **TOKENIZER_SPECIALS[family])
    return PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(family, vocab_size),
                                   **TOKENIZER_SPECIALS[family])


def model_config(family: str, tiny: bool):
    """transformers config: real size (bert-base-cased, GPT-2 small, gemma-3-270m) or tiny."""
    import transformers

    if family == "bert":
        if tiny:
            return transformers.BertConfig(vocab_size=512, hidden_size=32, num_hidden_layers=4,
                                           num_attention_heads=2, intermediate_size=64,
                                           max_position_embeddings=64)
        return transformers.BertConfig(vocab_size=28996)  # bert-base-cased = BertConfig defaults
    if family == "gpt2":
        if tiny:
            return transformers.GPT2Config(vocab_size=1024, n_embd=32, n_layer=4, n_head=2, n_positions=64,
                                           bos_token_id=1023, eos_token_id=1023)
        return transformers.GPT2Config()  # GPT-2 small = GPT2Config defaults
    if family == "gemma":
        kw = dict(pad_token_id=0, eos_token_id=1, bos_token_id=2, rms_norm_eps=1e-6, tie_word_embeddings=True)
        if tiny:
            return transformers.Gemma3TextConfig(
                vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=32,
                max_position_embeddings=64, query_pre_attn_scalar=16,
                layer_types=["sliding_attention"] * 3 + ["full_attention"], **kw)
        return transformers.Gemma3TextConfig(
            vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
            num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
            layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3, query_pre_attn_scalar=256,
            max_position_embeddings=32768, **kw)
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def model_class(family: str):
    import transformers

    return {"bert": transformers.BertForMaskedLM, "gpt2": transformers.GPT2LMHeadModel,
            "gemma": transformers.Gemma3ForCausalLM}[family]


def quiet_transformers():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_model(family: str, tiny: bool = False, seed: int = SEED):
    """(model, tokenizer): random init with a fixed seed, in eval mode, float32."""
    import torch

    quiet_transformers()
    config = model_config(family, tiny)
    torch.manual_seed(seed)
    model = model_class(family)(config).float().eval()
    if tiny:  # norms start as the identity; perturb them so they do something (deterministic)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name.lower() and p.dim() == 1:
                    p.add_(0.1 * torch.randn_like(p))
    return model, hf_tokenizer(family, vocab_size=config.vocab_size)


def save_checkpoint(family: str, tiny: bool, out: Path, seed: int = SEED) -> Path:
    """Save the random model and its tokenizer so that both environments load the same weights."""
    model, tok = build_model(family, tiny, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    (out / "bench.json").write_text(json.dumps({"family": family, "tiny": tiny, "seed": seed}))
    return out


def load_checkpoint(path: Path):
    """(family, model, tokenizer) from save_checkpoint's directory, under transformers 4 or 5."""
    import torch

    import transformers

    family = json.loads((Path(path) / "bench.json").read_text())["family"]
    v4 = int(transformers.__version__.split(".")[0]) < 5
    model = model_class(family).from_pretrained(str(path), **{"torch_dtype" if v4 else "dtype": torch.float32})
    return family, model.float().eval(), hf_tokenizer(family, Path(path) / "tokenizer.json")


def plain_prob(model, tok, family: str, prompt: str, answer: str) -> tuple[float, list[int], int]:
    """P(answer token | prompt) by one plain forward pass (no kn, no package): a weights check."""
    import torch

    if family == "bert":
        ids = tok(prompt)["input_ids"]
        pos = ids.index(tok.mask_token_id)
        gold = tok.convert_tokens_to_ids(answer)
    else:
        ids = tok(prompt)["input_ids"]
        pos = len(ids) - 1
        gold_ids = tok(" " + answer, add_special_tokens=False)["input_ids"]
        assert len(gold_ids) == 1, gold_ids
        gold = gold_ids[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    return torch.softmax(logits[0, pos].float(), -1)[gold].item(), ids, gold


def rel_err(a, b) -> float:
    """max|a - b| / max|b| over the whole matrix (0 when both are zero)."""
    import torch

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff

