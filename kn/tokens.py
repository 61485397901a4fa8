"""Prompts and answers to token ids: where the answer is predicted and which token is gold.

Causal LMs: the answer follows the prompt; a trailing space of the prompt belongs to the answer
token (" France"). Masked LMs: the prompt holds `[MASK]` once; an answer of k tokens becomes k mask
tokens. A multi-token answer is teacher-forced: token j is predicted with gold tokens 0..j-1 in place.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import LM, MASK


@dataclass(frozen=True)
class Target:
    """One answer token to predict: ids [1, seq], position that predicts it, gold token id."""

    ids: torch.Tensor
    pos: int
    gold: int


def _is_cjk(ch: str) -> bool:
    return ord(ch) >= 0x2E80


def _sep(left: str, answer: str) -> str:
    """What joins a prompt and its answer: the prompt's trailing space, else a space (none around CJK)."""
    if left != left.rstrip():
        return " "
    if not left or _is_cjk(left[-1]) or _is_cjk(answer[0]):
        return ""
    return " "


def _enc(lm: LM, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def answer_ids(lm: LM, left: str, answer: str) -> list[int]:
    """Token ids of `answer` as it follows `left` (tokenized together, so spacing comes out right)."""
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"the answer must be a non-empty string, got {answer!r}")
    answer = answer.strip()
    left = left.rstrip()
    head = _enc(lm, left) if left else []
    full = _enc(lm, left + _sep(left, answer) + answer)
    ids = full[len(head):] if full[: len(head)] == head else _enc(lm, _sep(left, answer) + answer)
    unk = getattr(lm.tokenizer, "unk_token_id", None)
    if not ids or (unk is not None and unk in ids):
        raise ValueError(
            f"the tokenizer of {lm.name} cannot represent the answer {answer!r} (tokens: "
            f"{lm.tokenizer.convert_ids_to_tokens(ids)}); pick an answer made of known words"
        )
    return ids


def _split_mask(prompt: str) -> tuple[str, str]:
    n = prompt.count(MASK)
    if n != 1:
        raise ValueError(
            f"a masked-LM prompt needs exactly one {MASK} where the answer goes; found {n} in {prompt!r}"
        )
    left, right = prompt.split(MASK)
    return left, right


def _masked_ids(lm: LM, left: str, right: str, k: int) -> tuple[list[int], int]:
    """Ids of `left [MASK]*k right` with special tokens, and the first mask position."""
    tok = lm.tokenizer
    ids = tok(left + tok.mask_token + right)["input_ids"]
    pos = ids.index(tok.mask_token_id)
    return ids[:pos] + [tok.mask_token_id] * k + ids[pos + 1:], pos


def _causal_prefix(lm: LM, prompt: str) -> list[int]:
    if MASK in prompt:
        raise ValueError(f"{lm.name} is a causal LM: write the prompt up to the answer, without {MASK}")
    ids = lm.tokenizer(prompt.rstrip())["input_ids"]
    if not ids:
        raise ValueError("the prompt is empty")
    return ids


def targets(lm: LM, prompt: str, answer: str) -> list[Target]:
    """The answer tokens of `answer` after `prompt`, each with the context that predicts it."""
    dev = lm.device
    if lm.masked:
        left, right = _split_mask(prompt)
        gold = answer_ids(lm, left, answer)
        ids, pos = _masked_ids(lm, left, right, len(gold))
        out = []
        for j, g in enumerate(gold):
            filled = ids[:pos] + gold[:j] + ids[pos + j:]
            out.append(Target(torch.tensor([filled], device=dev), pos + j, g))
        return out
    prefix = _causal_prefix(lm, prompt)
    gold = answer_ids(lm, prompt, answer)
    seq = prefix + gold
    return [
        Target(torch.tensor([seq[: len(prefix) + j]], device=dev), len(prefix) + j - 1, g)
        for j, g in enumerate(gold)
    ]


def query(lm: LM, prompt: str) -> tuple[torch.Tensor, int]:
    """Ids [1, seq] of a prompt and the position whose prediction is the answer."""
    if lm.masked:
        left, right = _split_mask(prompt)
        ids, pos = _masked_ids(lm, left, right, 1)
    else:
        ids = _causal_prefix(lm, prompt)
        pos = len(ids) - 1
    return torch.tensor([ids], device=lm.device), pos
