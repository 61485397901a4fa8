#!/usr/bin/env python
"""Attribution benchmark: kn against the EleutherAI `knowledge-neurons` package (PyPI 0.0.2).

One command, from the repository root, in kn's environment:

    python benchmarks/bench_attribution.py

It creates the package's own virtual environment on first use (benchmarks/.peer-venv: torch 2.13.0
CPU, transformers<5, knowledge-neurons 0.0.2; about a minute), builds random-init models of real
size with fixed seeds (bert-base-cased, GPT-2 small and gemma-3-270m configs; offline tokenizers),
saves each once and loads the same weights on both sides, then times, alternating and repeated:
  - the package: KnowledgeNeurons(model, tokenizer, model_type).get_scores(prompt, answer,
    batch_size=20, steps=20), in a worker process of the peer environment;
  - kn: kn.attribute(lm, prompt, answer, steps=20, rule="linspace"), the fast path, in a worker;
  - kn reference path (reference=True), in a worker of its own.
Every side runs in its own process, so each peak RSS is clean. It prints a markdown table and
writes it to benchmarks/results.md. Correctness checks run on the same outputs:
  - BERT: kn's linspace scores equal the package's, full [layers, width] matrix, to 1e-4 relative;
  - GPT-2 (the package hooks the pre-GELU tensor there) and Gemma-3: kn fast path vs kn reference.
"Relative" is max|a - b| / max|b| over the whole matrix.

Other modes:
    python benchmarks/bench_attribution.py --check-only --tiny   # CI: tiny models, checks, no timing
    python benchmarks/bench_attribution.py --setup-peer          # only create the peer environment
    python benchmarks/bench_attribution.py --models gemma --reps 5 --threads 2
    python benchmarks/bench_attribution.py --ab ../old-checkout --reps 5   # kn (A) vs this tree (B)
In --check-only mode the kn-vs-package check runs only if the peer environment exists (else it is
skipped with the reason printed); kn fast vs reference always runs. No speed target is ever asserted
by a unit test: tests/unit/test_benchmark_checks.py runs the tiny checks only.

This file is also the worker (``--worker peer|kn``), run by the peer environment's interpreter: its
module level imports nothing but the standard library, torch and transformers.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PEER_VENV = BENCH_DIR / ".peer-venv"
RESULTS = BENCH_DIR / "results.md"

TORCH_PIN = "torch==2.13.0"  # CPU wheel from the local index; never let pip resolve another torch
PEER_REQS = ["transformers<5", "einops", "numpy", "tqdm"]  # what knowledge_neurons really imports
PEER_PKG = "knowledge-neurons==0.0.2"  # installed with --no-deps: its unpinned torch could pull CUDA
PEER_STAMP = "kn-bench-peer-ready"

SEED = 0
STEPS = 20
BATCH = 20  # the package's batch size (steps % batch == 0 is required by it)
REL_TOL_PEER = 1e-4  # kn vs the package (BERT, linspace)
REL_TOL_REF = 1e-4  # kn fast vs reference, real-size models
REL_TOL_REF_TINY = 1e-5  # kn fast vs reference, tiny models (the kernel's own contract)

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


# ---------------------------------------------------------------------------------------------
# prompts, tokenizers, models (shared by the driver and both kinds of worker)


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


# ---------------------------------------------------------------------------------------------
# in-process checks (also what tests/unit/test_benchmark_checks.py runs)


def kn_tree() -> Path:
    """The kn checkout a kn worker imports: this repository, or $KN_BENCH_TREE (the other side of --ab)."""
    return Path(os.environ.get("KN_BENCH_TREE") or REPO)


def kn_lm(model, tok, name: str):
    if str(kn_tree()) not in sys.path:
        sys.path.insert(0, str(kn_tree()))
    import kn

    return kn.wrap(model, tok, name=name)


def check_fast_vs_reference(family: str, tiny: bool = True, n_prompts: int | None = None,
                            rule: str = "linspace", steps: int = STEPS) -> list[float]:
    """kn fast path vs kn reference path, per prompt: relative differences of the score matrices."""
    model, tok = build_model(family, tiny)
    lm = kn_lm(model, tok, f"{'tiny-' if tiny else ''}{family}")
    import kn  # kn_lm has put the repository on the path
    out = []
    for prompt, answer in prompts(family, n_prompts):
        fast = kn.attribute(lm, prompt, answer, steps=steps, rule=rule)
        ref = kn.attribute(lm, prompt, answer, steps=steps, rule=rule, reference=True)
        if not float(ref.abs().max()) > 0:
            raise AssertionError(f"{family}: reference scores are all zero for {prompt!r}")
        out.append(rel_err(fast, ref))
    return out


# ---------------------------------------------------------------------------------------------
# the peer environment


def peer_python(venv: Path = PEER_VENV) -> Path:
    return venv / "bin" / "python"


def peer_ready(venv: Path = PEER_VENV) -> bool:
    return (venv / PEER_STAMP).exists() and peer_python(venv).exists()


def setup_peer(venv: Path = PEER_VENV, log=print) -> float:
    """Create the package's environment (idempotent). Returns the seconds it took (0 if present)."""
    if peer_ready(venv):
        return 0.0
    t0 = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    log(f"creating the peer environment {venv} (torch 2.13.0 CPU, transformers<5, {PEER_PKG}) ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(peer_python(venv))
    pin = venv / "constraints.txt"
    pin.write_text(TORCH_PIN + "\n")
    pip = [py, "-m", "pip", "install", "-qq", "--disable-pip-version-check", "-c", str(pin)]
    subprocess.run(pip + [TORCH_PIN], check=True)  # first, so nothing can resolve another torch
    subprocess.run(pip + [TORCH_PIN] + PEER_REQS, check=True)
    subprocess.run(pip + ["--no-deps", PEER_PKG], check=True)
    probe = ("import torch, transformers, knowledge_neurons; "
             "assert torch.__version__.startswith('2.13.0'), torch.__version__; "
             "assert int(transformers.__version__.split('.')[0]) < 5; "
             "print(torch.__version__, transformers.__version__)")
    versions = subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()
    (venv / PEER_STAMP).write_text(versions + "\n")
    secs = time.perf_counter() - t0
    log(f"peer environment ready in {secs:.0f} s (torch, transformers: {versions})")
    return secs


# ---------------------------------------------------------------------------------------------
# workers: one process per side, JSON lines on stdin/stdout


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Side:
    """One side with one model loaded: the package ("peer") or kn (fast or reference path)."""

    def __init__(self, side: str, ckpt: Path, threads: int | None = None, reference: bool = False,
                 rule: str = "linspace"):
        import torch
        import transformers

        if threads:
            torch.set_num_threads(threads)
        quiet_transformers()
        t0 = time.perf_counter()
        self.family, self.model, self.tok = load_checkpoint(ckpt)
        family = self.family
        if side == "peer":
            from knowledge_neurons import KnowledgeNeurons

            runner = KnowledgeNeurons(self.model, self.tok, model_type=PEER_TYPE[family], device="cpu")

            def score(prompt, answer, steps, batch_size):
                return runner.get_scores(prompt, peer_answer(family, answer), batch_size=batch_size,
                                         steps=steps, pbar=False)

            def locate(prompts, answer, steps, threshold, share):
                return runner.get_refined_neurons(prompts, peer_answer(family, answer), p=share,
                                                  batch_size=BATCH, steps=steps, quiet=True,
                                                  coarse_adaptive_threshold=threshold)
        else:
            lm = kn_lm(self.model, self.tok, f"bench-{family}")
            import kn

            rule_kw = "rule" if "rule" in inspect.signature(kn.attribute).parameters else "method"  # kn before 26788f9

            def score(prompt, answer, steps, batch_size):
                return kn.attribute(lm, prompt, answer, steps=steps, reference=reference, **{rule_kw: rule})

            def locate(prompts, answer, steps, threshold, share):
                return [list(n) for n in kn.locate(lm, prompts, answer, steps=steps, rule=rule,
                                                   threshold=threshold, share=share, min_prompts=1)]

        self.score, self.locate = score, locate
        self.info = {"side": side, "family": family, "torch": torch.__version__,
                     "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                     "load_s": time.perf_counter() - t0, "load_rss_mb": _rss_mb()}

    def ask(self, op: str, **cmd) -> dict:
        import torch

        if op == "quit":
            return {"peak_mb": _peak_mb()}
        if op == "prob":
            p, ids, gold = plain_prob(self.model, self.tok, self.family, cmd["prompt"], cmd["answer"])
            return {"prob": p, "ids": ids, "gold": gold}
        t, c = time.perf_counter(), time.process_time()
        if op == "locate":  # a whole fact: every paraphrase's attribution, then the refined set
            found = self.locate(cmd["prompts"], cmd["answer"], cmd["steps"], cmd["threshold"], cmd["share"])
            return {"seconds": time.perf_counter() - t, "cpu": time.process_time() - c,
                    "neurons": sorted([int(a), int(b)] for a, b in found)}
        scores = self.score(cmd["prompt"], cmd["answer"], cmd["steps"], cmd["batch_size"])
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        if cmd.get("out"):
            torch.save(scores.detach().cpu().float().clone(), cmd["out"])
        return {"seconds": secs, "cpu": cpu, "shape": list(scores.shape), "peak_mb": _peak_mb()}

    def close(self):
        """In-process: no peak memory of its own to report."""
        return None

    def kill(self):
        pass


def keep_freed_memory() -> None:
    """kn's allocator tuning (`kn.allocator`, opt-in) in a timed kn process; a kn tree older than the
    module (the A side of --ab) runs without it."""
    try:
        from kn import allocator
    except ImportError:
        return
    allocator.keep_freed_memory()


def worker_main(side: str, ckpt: Path, threads: int, reference: bool, rule: str) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    handler = Side(side, ckpt, threads, reference, rule)
    if side == "kn":  # a timed process: the worker asks for the tuning (the peer gets it from its environment)
        keep_freed_memory()
    proto.write(json.dumps(handler.info) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        proto.write(json.dumps(handler.ask(**cmd)) + "\n")
        if cmd["op"] == "quit":
            return


class Worker:
    """A worker subprocess: one side (peer, kn fast or kn reference) with one model loaded."""

    def __init__(self, name: str, python: Path | str, ckpt: Path, threads: int, logdir: Path, *,
                 side: str, reference: bool = False, rule: str = "linspace", tree: Path = REPO):
        self.name = name
        self.log_path = logdir / f"{name}.log"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if side == "peer":
            env.pop("PYTHONPATH", None)  # the peer environment must not see kn or kn's packages
            from kn import allocator  # the driver runs with kn's interpreter

            if allocator.enabled():  # the glibc thresholds kn's workers ask for, so both sides run on the same malloc
                env.setdefault("MALLOC_MMAP_THRESHOLD_", str(allocator.MMAP_MAX))
                env.setdefault("MALLOC_TRIM_THRESHOLD_", str(allocator.TRIM_MAX))
        else:
            env["PYTHONPATH"] = os.pathsep.join(p for p in [str(tree), env.get("PYTHONPATH", "")] if p)
            env["KN_BENCH_TREE"] = str(tree)
        cmd = [str(python), str(Path(__file__).resolve()), "--worker", side, "--ckpt", str(ckpt),
               "--threads", str(threads), "--rule", rule] + (["--reference"] if reference else [])
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=str(REPO))
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.flush()
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(f"worker {self.name} died (exit {self.proc.returncode}); its log ends:\n{tail}")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> float:
        """Stop the worker; returns its peak RSS in MB."""
        try:
            peak = self.ask(op="quit")["peak_mb"]
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait(timeout=60)
            self.log.close()
        return peak

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------------------------
# the driver


def run_family(family: str, args, tmp: Path, log) -> dict:
    """Build the model once, start the workers, alternate timed runs, check, return the row."""
    tiny = args.tiny
    ckpt = tmp / family
    log(f"\n== {TINY_LABEL[family] if tiny else LABEL[family]}: building the random model (seed {SEED}) ...")
    if args.check_only:  # no memory to measure: build here, and run kn in this process
        save_checkpoint(family, tiny, ckpt)
    else:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--build", family, "--ckpt", str(ckpt)]
                       + (["--tiny"] if tiny else []), check=True, cwd=str(REPO),
                       env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
    ps = prompts(family, args.prompts)
    use_peer = family in PEER_TYPE and args.peer_ok
    workers: dict[str, Worker] = {}
    row = {"family": family, "tiny": tiny, "n_prompts": len(ps)}
    try:
        if use_peer:
            workers["peer"] = Worker(f"{family}-peer", peer_python(), ckpt, args.threads, tmp, side="peer")
        if args.check_only:
            workers["fast"] = Side("kn", ckpt, args.threads)
            workers["ref"] = Side("kn", ckpt, args.threads, reference=True)
        else:
            workers["fast"] = Worker(f"{family}-kn-fast", sys.executable, ckpt, args.threads, tmp, side="kn")
            workers["ref"] = Worker(f"{family}-kn-ref", sys.executable, ckpt, args.threads, tmp, side="kn",
                                    reference=True)
        for name, w in workers.items():
            log(f"   {name:5s} side: torch {w.info['torch']}, transformers {w.info['transformers']}, "
                f"{w.info['threads']} threads, load {w.info['load_s']:.1f} s, RSS {w.info['load_rss_mb']:.0f} MB")
        row["versions"] = {n: (w.info["torch"], w.info["transformers"]) for n, w in workers.items()}

        # the same weights and tokens on both sides: plain forward passes, compared
        if use_peer:
            worst = 0.0
            for prompt, answer in ps:
                a = workers["peer"].ask(op="prob", prompt=prompt, answer=answer)
                b = workers["fast"].ask(op="prob", prompt=prompt, answer=answer)
                if a["ids"] != b["ids"] or a["gold"] != b["gold"]:
                    raise AssertionError(f"{family}: tokenization differs between the environments: "
                                         f"{a['ids']}/{a['gold']} vs {b['ids']}/{b['gold']}")
                worst = max(worst, abs(a["prob"] - b["prob"]) / max(abs(b["prob"]), 1e-30))
            row["weights_rel"] = worst
            log(f"   same weights and tokens in both environments: P(answer) agrees to {worst:.1e} relative")

        warm = [] if args.check_only else [n for n in ("peer", "fast") if n in workers]
        for n in warm:  # one untimed call each: lazy initialisation is not attribution
            workers[n].ask(op="score", prompt=ps[0][0], answer=ps[0][1], steps=args.steps, batch_size=BATCH)
        times: dict[str, list[list[float]]] = {n: [[] for _ in ps] for n in workers}
        cpu: dict[str, list[list[float]]] = {n: [[] for _ in ps] for n in workers}
        scores: dict[str, list[Path]] = {n: [tmp / f"{family}-{n}-{i}.pt" for i in range(len(ps))] for n in workers}
        reps = 1 if args.check_only else args.reps
        ref_reps = 1 if args.check_only else min(args.ref_reps, reps)
        for rep in range(reps):
            order = [n for n in ("peer", "fast") if n in workers]
            if args.check_only and family != "bert":  # the package's scores are compared on BERT only
                order = ["fast"]
            if rep % 2:
                order.reverse()
            if rep < ref_reps:
                order.append("ref")
            for i, (prompt, answer) in enumerate(ps):
                for n in order:
                    if not args.check_only:
                        time.sleep(0.2)  # let the previous worker's threads go idle
                    r = workers[n].ask(op="score", prompt=prompt, answer=answer, steps=args.steps,
                                       batch_size=BATCH, out=str(scores[n][i]) if rep == 0 else "")
                    times[n][i].append(r["seconds"])
                    cpu[n][i].append(r["cpu"])
                    args.max_load = max(args.max_load, os.getloadavg()[0])
            if not args.check_only:
                log(f"   rep {rep + 1}/{reps}: " + ", ".join(
                    f"{n} {statistics.median(t[-1] for t in times[n]):.2f} s/prompt" for n in order))
        for n, w in list(workers.items()):
            row[f"{n}_peak_mb"] = w.close()
            del workers[n]
    finally:
        for w in workers.values():
            w.kill()

    import torch

    def med(n, d):  # median over prompts of each prompt's median over repetitions
        if n not in d or not all(d[n]):
            return None
        return statistics.median(statistics.median(t) for t in d[n])

    for n in ("peer", "fast", "ref"):
        row[f"{n}_s"] = med(n, times)
        row[f"{n}_cpu"] = med(n, cpu)
    row["times"] = times
    fast = [torch.load(p) for p in scores["fast"]]
    ref = [torch.load(p) for p in scores["ref"]]
    row["fast_vs_ref"] = max(rel_err(a, b) for a, b in zip(fast, ref))
    row["fast_vs_ref_each"] = [rel_err(a, b) for a, b in zip(fast, ref)]
    if use_peer and family == "bert":
        peer = [torch.load(p) for p in scores["peer"]]
        row["peer_vs_kn_each"] = [rel_err(a, b) for a, b in zip(fast, peer)]
        row["peer_vs_kn"] = max(row["peer_vs_kn_each"])
        row["peer_vs_kn_ref"] = max(rel_err(a, b) for a, b in zip(ref, peer))
        row["peer_shape"] = list(peer[0].shape)
    row["kn_shape"] = list(fast[0].shape)
    return row


def run_ab(family: str, args, tmp: Path, log) -> dict:
    """kn's fast path from this tree (B) against another checkout (A, `--ab PATH`): the same weights,
    prompts and threads, one worker each, alternating per prompt (the order flips every repetition)."""
    ckpt = tmp / family
    log(f"\n== {LABEL[family]}: A = {args.ab}, B = {REPO}")
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--build", family, "--ckpt", str(ckpt)],
                   check=True, cwd=str(REPO), env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
    ps = prompts(family, args.prompts)
    trees = {"A": Path(args.ab).resolve(), "B": REPO}
    workers = {n: Worker(f"{family}-{n}", sys.executable, ckpt, args.threads, tmp, side="kn", tree=t)
               for n, t in trees.items()}
    times = {n: [[] for _ in ps] for n in workers}
    outs = {n: [tmp / f"{family}-ab-{n}-{i}.pt" for i in range(len(ps))] for n in workers}
    try:
        for n in workers:  # one untimed call each
            workers[n].ask(op="score", prompt=ps[0][0], answer=ps[0][1], steps=args.steps, batch_size=BATCH)
        for rep in range(args.reps):
            order = ["A", "B"] if rep % 2 == 0 else ["B", "A"]
            for i, (prompt, answer) in enumerate(ps):
                for n in order:
                    time.sleep(0.2)
                    r = workers[n].ask(op="score", prompt=prompt, answer=answer, steps=args.steps,
                                       batch_size=BATCH, out=str(outs[n][i]) if rep == 0 else "")
                    times[n][i].append(r["seconds"])
                    args.max_load = max(args.max_load, os.getloadavg()[0])
            log(f"   rep {rep + 1}/{args.reps}: " + ", ".join(
                f"{n} {statistics.median(t[-1] for t in times[n]):.3f} s/prompt" for n in workers))
        for w in workers.values():
            w.close()
    finally:
        for w in workers.values():
            w.kill()
    import torch

    med = {n: statistics.median(statistics.median(t) for t in times[n]) for n in workers}
    ratios = [statistics.median(b) / statistics.median(a) for a, b in zip(times["A"], times["B"])]
    best = {n: statistics.median(min(t) for t in times[n]) for n in workers}  # least disturbed run
    diff = max(rel_err(torch.load(b), torch.load(a)) for a, b in zip(outs["A"], outs["B"]))
    return {"family": family, "A_s": med["A"], "B_s": med["B"], "ratio": med["B"] / med["A"],
            "ratio_min": best["B"] / best["A"],
            "ratio_lo": min(ratios), "ratio_hi": max(ratios), "scores_rel": diff, "n_prompts": len(ps)}


def report_ab(rows: list[dict], args) -> str:
    lines = [f"A: `{args.ab}` ({_commit(Path(args.ab))}); B: this tree ({_commit(REPO)}); "
             f"{args.reps} alternating repetitions, {args.threads} threads, steps {args.steps}, rule linspace; "
             f"highest 1-minute load average {args.max_load:.1f}.", "",
             "| model | A s/prompt | B s/prompt | B/A (median) | B/A (fastest run) | B/A per prompt (min-max) "
             "| scores B vs A (rel.) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {LABEL[r['family']]} | {r['A_s']:.3f} | {r['B_s']:.3f} | {r['ratio']:.3f} | {r['ratio_min']:.3f} | "
                     f"{r['ratio_lo']:.3f}-{r['ratio_hi']:.3f} | {r['scores_rel']:.1e} |")
    return "\n".join(lines)


def _commit(tree: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"


def describe_machine(threads: int) -> str:
    """CPU model, cores, and the fp32 matmul rate at the benchmark's thread count (a yardstick)."""
    import torch

    name = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    torch.set_num_threads(threads)
    a, w = torch.randn(240, 768), torch.randn(3072, 768)
    for _ in range(3):
        a @ w.T
    n, t = 30, time.perf_counter()
    for _ in range(n):
        a @ w.T
    gflops = 2 * 240 * 768 * 3072 * n / (time.perf_counter() - t) / 1e9
    return (f"{name}, {os.cpu_count()} cores, fp32 matmul {gflops:.0f} GFLOP/s at {threads} threads, "
            f"load average {os.getloadavg()[0]:.1f} at start")


def _fmt_s(x):
    return "—" if x is None else f"{x:.2f}"


def _fmt_mb(x):
    return "—" if x is None else f"{x:.0f}"


def _fmt_x(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}x"


def report(rows: list[dict], args, setup_s: float | None) -> tuple[str, bool]:
    """Markdown tables, checks and targets; returns (text, everything passed)."""
    ok = True
    lines = []
    if not args.check_only:
        lines += [
            f"Steps {args.steps}, package batch size {BATCH}, linspace path on both sides, {args.threads} torch "
            f"threads, {rows[0]['n_prompts']} prompts x {args.reps} repetitions (reference path: "
            f"{min(args.ref_reps, args.reps)}), median seconds per prompt; peak = RSS high-water mark of "
            f"the side's own worker process (model included).", "",
            "| model | peer s/prompt | kn s/prompt | ratio | kn peak MB | peer peak MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            name = TINY_LABEL[r["family"]] if r["tiny"] else LABEL[r["family"]]
            lines.append(f"| {name} | {_fmt_s(r['peer_s'])} | {_fmt_s(r['fast_s'])} | {_fmt_x(r['peer_s'], r['fast_s'])}"
                         f" | {_fmt_mb(r.get('fast_peak_mb'))} | {_fmt_mb(r.get('peer_peak_mb'))} |")
        lines += ["", "CPU seconds per prompt (process time summed over threads; a busy machine distorts "
                  "these less than wall time):", "",
                  "| model | peer | kn fast | kn reference | peer / kn | reference / fast |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            name = TINY_LABEL[r["family"]] if r["tiny"] else LABEL[r["family"]]
            lines.append(f"| {name} | {_fmt_s(r['peer_cpu'])} | {_fmt_s(r['fast_cpu'])} | {_fmt_s(r['ref_cpu'])} | "
                         f"{_fmt_x(r['peer_cpu'], r['fast_cpu'])} | {_fmt_x(r['ref_cpu'], r['fast_cpu'])} |")
        cores = os.cpu_count() or 1
        if args.max_load > cores + 0.5:
            lines += ["", f"**Warning: the machine was busy during this run (1-minute load average up to "
                          f"{args.max_load:.1f} on {cores} cores): wall times are inflated; rerun on an idle "
                          f"machine for numbers to quote.**"]
        lines += ["", "| model | kn reference s/prompt | kn fast s/prompt | ratio | reference peak MB | fast peak MB |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            name = TINY_LABEL[r["family"]] if r["tiny"] else LABEL[r["family"]]
            lines.append(f"| {name} | {_fmt_s(r['ref_s'])} | {_fmt_s(r['fast_s'])} | {_fmt_x(r['ref_s'], r['fast_s'])}"
                         f" | {_fmt_mb(r.get('ref_peak_mb'))} | {_fmt_mb(r.get('fast_peak_mb'))} |")
    lines += ["", "Checks (relative = max|a - b| / max|b| over the full [layers, width] matrix, worst prompt):", ""]
    tol_ref = REL_TOL_REF_TINY if args.tiny else REL_TOL_REF
    for r in rows:
        name = TINY_LABEL[r["family"]] if r["tiny"] else LABEL[r["family"]]
        if "weights_rel" in r:
            lines.append(f"- {name}: same weights in both environments, plain P(answer) agrees to "
                         f"{r['weights_rel']:.1e}")
        if "peer_vs_kn" in r:
            good = r["peer_vs_kn"] <= REL_TOL_PEER and r["peer_shape"] == r["kn_shape"]
            ok &= good
            lines.append(f"- {name}: kn (fast, linspace) vs the package: {r['peer_vs_kn']:.1e} "
                         f"(kn reference vs package {r['peer_vs_kn_ref']:.1e}; shape {r['kn_shape']}) "
                         f"{'PASS' if good else 'FAIL'} (<= {REL_TOL_PEER:g})")
        elif r["family"] == "bert":
            lines.append(f"- {name}: kn vs the package: SKIPPED ({args.peer_skip_reason})")
        good = r["fast_vs_ref"] <= tol_ref
        ok &= good
        lines.append(f"- {name}: kn fast vs kn reference: {r['fast_vs_ref']:.1e} "
                     f"{'PASS' if good else 'FAIL'} (<= {tol_ref:g})")
    if not args.check_only and not args.tiny:
        lines += ["", "Targets (ratios measured in this run):", ""]
        by = {r["family"]: r for r in rows}
        targets = []
        if "bert" in by and by["bert"]["peer_s"]:
            targets.append(("kn >= 3x the package on BERT-base", by["bert"]["peer_s"] / by["bert"]["fast_s"] >= 3))
        if "gpt2" in by and by["gpt2"]["peer_s"]:
            targets.append(("kn >= 10x the package on GPT-2 small", by["gpt2"]["peer_s"] / by["gpt2"]["fast_s"] >= 10))
        if "gemma" in by:
            targets.append(("gemma-3-270m fast path >= 5x the reference path",
                            by["gemma"]["ref_s"] / by["gemma"]["fast_s"] >= 5))
            targets.append(("gemma-3-270m kn peak memory < 3 GB", by["gemma"]["fast_peak_mb"] < 3 * 1024))
        for what, good in targets:
            lines.append(f"- {what}: {'MET' if good else 'NOT MET'}")
    env = {}
    for r in rows:
        for n, (tv, trv) in r.get("versions", {}).items():
            env.setdefault({"peer": "package", "fast": "kn", "ref": "kn"}[n], f"torch {tv}, transformers {trv}")
    env = [f"{n}: {v}" for n, v in env.items()]
    lines += ["", "Environments: " + "; ".join(env) + "."]
    if setup_s:
        lines.append(f"Peer environment created in this run in {setup_s:.0f} s.")
    return "\n".join(lines), ok


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(FAMILIES), help="comma-separated subset of bert,gpt2,gemma")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on every side (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per prompt (default 3)")
    p.add_argument("--ref-reps", type=int, default=1, help="repetitions of the kn reference path (default 1)")
    p.add_argument("--prompts", type=int, default=len(FACTS), help=f"how many prompts (max {len(FACTS)})")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--check-only", action="store_true", help="correctness checks only, no timing")
    p.add_argument("--tiny", action="store_true", help="tiny models (CI); with --check-only")
    p.add_argument("--no-peer", action="store_true", help="leave the package out")
    p.add_argument("--setup-peer", action="store_true", help="only create the peer environment")
    p.add_argument("--out", default=str(RESULTS), help="where the table goes ('' for nowhere)")
    p.add_argument("--ab", metavar="TREE", help="time kn's fast path of another checkout (A) against this one "
                   "(B), alternating; prints B/A per model and nothing else (no package, no reference path)")
    # internal
    p.add_argument("--worker", choices=["peer", "kn"], help=argparse.SUPPRESS)
    p.add_argument("--build", choices=FAMILIES, help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rule", default="linspace", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, Path(args.ckpt), args.threads, args.reference, args.rule)
        return 0
    if args.build:
        save_checkpoint(args.build, args.tiny, Path(args.ckpt))
        return 0
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    if args.setup_peer:
        setup_peer(log=log)
        return 0
    families = [f.strip() for f in args.models.split(",") if f.strip()]
    for f in families:
        if f not in FAMILIES:
            raise SystemExit(f"unknown model {f!r}; choose from {','.join(FAMILIES)}")
    if args.ab:
        if not (Path(args.ab) / "kn" / "__init__.py").is_file():
            raise SystemExit(f"--ab {args.ab}: not a kn checkout (no kn/__init__.py there)")
        args.max_load = os.getloadavg()[0]
        log(f"machine: {describe_machine(args.threads)}")
        tmp = Path(tempfile.mkdtemp(prefix="kn-ab-"))
        try:
            rows = [run_ab(f, args, tmp, log) for f in families]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print("\n" + report_ab(rows, args), flush=True)
        return 0
    setup_s = None
    args.peer_ok, args.peer_skip_reason = False, ""
    if args.no_peer:
        args.peer_skip_reason = "--no-peer"
    elif not any(f in PEER_TYPE for f in families):
        args.peer_skip_reason = "no model the package supports was selected"
    elif args.check_only and not peer_ready():
        args.peer_skip_reason = (f"the peer environment {PEER_VENV.relative_to(REPO)} is missing; create it with "
                                 "`python benchmarks/bench_attribution.py --setup-peer` (about a minute)")
    else:
        setup_s = setup_peer(log=log) or None
        args.peer_ok = True
    if args.peer_skip_reason:
        log(f"SKIP kn-vs-package comparison: {args.peer_skip_reason}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that workers and temp files get cleaned
    args.max_load = os.getloadavg()[0]
    if not args.check_only and args.max_load > (os.cpu_count() or 1) + 0.5:
        log(f"warning: the machine is busy (1-minute load average {args.max_load:.1f}); timings will be inflated")
    machine = ""
    if not args.check_only:
        machine = describe_machine(args.threads)
        log(f"machine: {machine}")
    tmp = Path(tempfile.mkdtemp(prefix="kn-bench-"))
    try:
        rows = [run_family(f, args, tmp, log) for f in families]
    except BaseException:
        for p in tmp.iterdir():  # keep the worker logs, drop checkpoints and scores
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.suffix != ".log":
                p.unlink()
        log(f"(worker logs kept in {tmp})")
        raise
    text, ok = report(rows, args, setup_s)
    shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + text, flush=True)
    if args.out and not args.check_only and not args.tiny:
        Path(args.out).write_text(
            "# Attribution benchmark: kn vs knowledge-neurons 0.0.2\n\n"
            f"Command: `{' '.join(['python benchmarks/bench_attribution.py'] + list(argv or sys.argv[1:]))}`. "
            f"Measured {time.strftime('%Y-%m-%d')} on {machine}.\n\n" + text + "\n")
        log(f"\nwritten to {Path(args.out).resolve().relative_to(REPO) if Path(args.out).resolve().is_relative_to(REPO) else args.out}")
    if not ok:
        log("CHECKS FAILED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
