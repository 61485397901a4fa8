"""Causal tracing of a fact's FFN outputs (Meng et al. 2022, "Locating and Editing Factual Associations
in GPT", section 2; kmeng01/rome `experiments/causal_trace.py`): which layer's FFN, at the subject's
last token, carries the answer? ROME edits there (`kn.edits.rome`, layer="trace").

For a causal prompt, its subject and its answer:

1. clean run: the FFN output (the output of the FFN output projection, the family table's
   `down_proj`; the MLP sublayer's output) of every layer at the subject's last token is kept;
2. corrupted runs: `samples` copies of the prompt whose subject tokens' input embeddings (the output of
   the input embedding module, so Gemma's scaling is included) get Gaussian noise of std
   `noise` x sigma, sigma the std of the input embeddings over the whole vocabulary; seeded, one draw
   shared by every run below (as ROME, which re-seeds per run);
3. restored runs, per layer l: the corrupted runs with the clean FFN output put back at the subject's
   last token in the `window` layers around l (ROME's window: layers max(0, l - window // 2) up to
   l - (-window // 2), clipped at the top);

P = the mean over the samples of the answer's first token's probability at the prompt's last
position; the indirect effect of layer l = P(restored at l) - P(corrupted). The traced layer is the
argmax.

Differences from ROME's code: sigma is taken over the vocabulary (ROME: over the subjects' tokens of its
1,209 known facts, which kn does not ship); the default window is 1 (ROME's MLP traces use 10 of GPT-2
XL's 48 layers; in a model of 3 to 30 layers a wide window spans much of the depth and flattens the
peak: pass window=max(1, round(n_layers * 10 / 48)) for ROME's share). The model is only read (hooks,
no weight is written) and the global RNG is not used.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import checks
from ..hooks import hooked
from ..models import LM
from ..tokens import targets

NOISE = 3.0  # ROME: 3 x the embeddings' std
SAMPLES = 10  # ROME: 10 noise samples
WINDOW = 1  # ROME's MLP traces: 10 (of 48 layers); see the module docstring


@dataclass(frozen=True)
class Trace:
    """effects: [n_layers] indirect effect of restoring the FFN output at the subject's last token (layer l
    in the window around l); layer: the argmax; clean / corrupted: P(answer) of the clean run and the
    corrupted runs' mean; subject: the subject's token positions [start, end); sigma: the embeddings' std."""

    effects: torch.Tensor
    layer: int
    clean: float
    corrupted: float
    subject: tuple[int, int]
    sigma: float


def subject_last(lm: LM, prompt: str, subject: str) -> int:
    """Position of the subject's last token in the prompt's ids (the subject's last occurrence)."""
    end = prompt.rindex(subject) + len(subject)
    return len(lm.tokenizer(prompt[:end])["input_ids"]) - 1


def subject_range(lm: LM, prompt: str, subject: str) -> tuple[int, int]:
    """Token positions [start, end) of the subject's last occurrence in the prompt's ids (end - 1 is
    `subject_last`)."""
    begin = prompt.rindex(subject)
    end = subject_last(lm, prompt, subject) + 1
    start = len(lm.tokenizer(prompt[:begin].rstrip())["input_ids"])
    return min(start, end - 1), end


def embedding_std(lm: LM, chunk: int = 8192) -> float:
    """The std of the input embedding module's outputs over every token of the vocabulary (float64)."""
    emb = lm.model.get_input_embeddings()
    n = emb.weight.shape[0]
    s = s2 = 0.0
    count = 0
    with torch.no_grad():
        for i in range(0, n, chunk):
            e = emb(torch.arange(i, min(n, i + chunk), device=lm.device)[None])[0].double()
            s += e.sum().item()
            s2 += (e * e).sum().item()
            count += e.numel()
    mean = s / count
    return max(s2 / count - mean * mean, 0.0) ** 0.5


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """ROME's window around `layer`: max(0, layer - window // 2) .. min(n_layers, layer - (-window // 2))."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def causal_trace(lm: LM, prompt: str, subject: str, answer: str, *, samples: int = SAMPLES, noise: float = NOISE,
                 window: int = WINDOW, seed: int = 0) -> Trace:
    """The per-layer indirect effects of the FFN output at the subject's last token on P(answer) (module
    docstring); `answer` as it follows `prompt` (its first token is read)."""
    if lm.masked:
        raise checks.ArgumentError(f"causal tracing reads a causal LM's next token; {lm.name} is a masked LM")
    checks.text(prompt, "prompt"), checks.text(subject, "subject")
    checks.integer(samples, "samples", low=1), checks.integer(window, "window", low=1)
    checks.integer(seed, "seed", low=0), checks.number(noise, "noise", low=0.0)
    if subject not in prompt:
        raise checks.ArgumentError(f"subject {subject!r} is not in the prompt {prompt!r}")
    t = targets(lm, prompt, answer)[0]
    ids, pos, gold = t.ids, t.pos, t.gold
    start, end = subject_range(lm, prompt, subject)
    last = end - 1
    n_tok = ids.shape[1]
    if not 0 <= start < end <= n_tok:
        raise checks.ArgumentError(f"subject {subject!r} is not a token span of the prompt {prompt!r}")
    n = lm.n_layers
    sigma = embedding_std(lm)
    emb = lm.model.get_input_embeddings()
    g = torch.Generator().manual_seed(seed)
    draw = torch.randn(samples, end - start, emb.weight.shape[1], generator=g, dtype=torch.float64)
    noise_t = (noise * sigma * draw).to(device=lm.device)

    clean: dict[int, torch.Tensor] = {}

    def keep(layer):
        def fn(module, args, output):
            clean[layer] = output.view(1, n_tok, output.shape[-1])[0, last].detach().clone()
        return fn

    def corrupt(module, args, output):
        out = output.clone()
        out[:, start:end] = out[:, start:end] + noise_t.to(out.dtype)
        return out

    def restore(layer):
        def fn(module, args, output):
            out = output.clone()
            view = out.view(samples, n_tok, out.shape[-1])  # flat FFNs (OPT) give [batch * seq, hidden]
            view[:, last] = clean[layer]
            return out
        return fn

    def prob(hooks, batch):
        with hooked(hooks):
            logits = lm.model(input_ids=ids.repeat(batch, 1), use_cache=False).logits[:, pos].float()
        return torch.softmax(logits, -1)[:, gold].double().mean().item()

    with torch.no_grad():
        p_clean = prob([(lm.down_proj(l), "post", keep(l)) for l in range(n)], 1)
        p_low = prob([(emb, "post", corrupt)], samples)
        effects = torch.zeros(n, dtype=torch.float64)
        for l in range(n):
            hooks = [(emb, "post", corrupt)] + [(lm.down_proj(j), "post", restore(j)) for j in window_layers(l, window, n)]
            effects[l] = prob(hooks, samples) - p_low
    return Trace(effects, int(effects.argmax()), p_clean, p_low, (start, end), sigma)
