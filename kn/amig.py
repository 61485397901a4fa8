"""The AMIG baseline (Chen et al. 2024): where IG starts is what the model computes from a prompt
that has lost one of its tokens, on average.

For each corruptible token of the prompt, one copy of the prompt with that token replaced by the
corruption token (masked LM: its mask token; causal LM: its EOS token); the baseline of every layer
is the mean of the copies' neuron-site activations at the answer-predicting position, all layers
from one batch of copies. Corruptible (kn's convention, `positions="prompt"`): neither a special
token (BOS, CLS, SEP, pad, ...) nor the answer (a masked LM's slot; a causal LM's teacher-forced
answer tokens), so a multi-token answer gets one baseline per answer token, from its own context.
`positions="all"` corrupts every position, as the reference code does. IG then runs from b to x and
multiplies by x - b (`kn.IG(multiplier="x")` is the reference code's x).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .hooks import site_hooks, stop_at_head
from .ig.clean import run_to_head
from .models import LM
from .tokens import Target

POSITIONS = ("prompt", "all")
ROW_TOKENS = 8192  # tokens per forward pass of copies (memory, not results)


@dataclass(frozen=True)
class AMIG:
    """The AMIG baseline. token: the corruption token, an id or a token string (None: the mask token
    of a masked LM, the EOS token of a causal LM); positions: "prompt" (kn: every token neither
    special nor the answer) or "all" (the reference code: every position)."""

    token: int | str | None = None
    positions: str = "prompt"

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"AMIG positions must be one of {POSITIONS}, got {self.positions!r}")
        t = self.token
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, str)) or t == ""
                              or (isinstance(t, int) and t < 0)):
            raise ValueError(f"AMIG token must be None, a token id >= 0 or a token string, got {t!r}")

    def corruption_id(self, lm: LM) -> int:
        """The id every copy puts in place of its corrupted token; a clear error when there is none."""
        tok = lm.tokenizer
        if self.token is None:
            kind, tid = ("mask", tok.mask_token_id) if lm.masked else ("EOS", tok.eos_token_id)
            if tid is None:
                raise ValueError(f"the tokenizer of {lm.name} has no {kind} token to corrupt the prompt with; "
                                 "choose one: baseline=kn.AMIG(token=ID or 'TOKEN')")
            return int(tid)
        if isinstance(self.token, int):
            if self.token >= lm.model.get_input_embeddings().num_embeddings:
                raise ValueError(f"AMIG token id {self.token} is outside the vocabulary of {lm.name}")
            return self.token
        tid = tok.convert_tokens_to_ids(self.token)
        if tid is None or (tid == tok.unk_token_id and self.token != tok.unk_token):
            raise ValueError(f"{self.token!r} is not a token of {lm.name}; pass an id or one of its tokens")
        return int(tid)

    def corrupted(self, lm: LM, t: Target) -> list[int]:
        """Positions of t.ids that get a copy each."""
        ids = t.ids[0].tolist()
        if self.positions == "all":
            return list(range(len(ids)))
        special = set(lm.tokenizer.all_special_ids)
        start, end = t.slot
        return [i for i, v in enumerate(ids) if v not in special and not start <= i < end]

    def copies(self, lm: LM, t: Target) -> torch.Tensor:
        """The corrupted prompts [n_copies, seq]."""
        where = self.corrupted(lm, t)
        if not where:
            raise ValueError(f"the prompt {lm.tokenizer.decode(t.ids[0])!r} has no token AMIG can corrupt "
                             "(only special tokens and the answer); use baseline='zero' for it")
        rows = t.ids.repeat(len(where), 1)
        rows[torch.arange(len(where)), torch.tensor(where)] = self.corruption_id(lm)
        return rows

    def __call__(self, lm: LM, t: Target) -> torch.Tensor:
        """The baseline [n_layers, width] (float32) of one answer token."""
        rows = self.copies(lm, t)
        total = torch.zeros(lm.n_layers, lm.width, dtype=torch.float32, device=lm.device)
        chunk = max(1, ROW_TOKENS // rows.shape[1])

        def add(layer, act):
            total[layer] += act[:, t.pos].float().sum(0)

        with torch.no_grad():
            for i in range(0, len(rows), chunk):
                run_to_head(lm.model, site_hooks(lm, add) + [stop_at_head(lm, t.pos, {})],
                            input_ids=rows[i:i + chunk], use_cache=False)
        return total / len(rows)

    def to_dict(self) -> dict:
        return {"amig": {"token": self.token, "positions": self.positions}}
