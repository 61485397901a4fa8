"""What every edit method shares: the edit request, the method's interface, the registry, and the
save-and-restore of the parameters an edit writes.

An edit method is a frozen dataclass of its settings (like `kn.IG`) with a class attribute `name` and
one method, `apply(lm, requests)`: a context manager inside which the model reads every request's
new object, and after which it is bit-identical to before (also after an exception). Several requests
are edited at once (a batch). A method is registered once (`register`, in `kn.edits`); `edit` is the
public entry point that checks the requests once.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, ContextManager, Iterable, Iterator, Sequence

import torch

from .. import checks
from ..data.templates import MASK
from ..models import LM
from ..neuron import Neuron


@dataclass(frozen=True)
class Request:
    """One fact to edit: its prompts should read `new` instead of `old`.

    prompts: the editing prompts (causal: the text before the object; masked: with [MASK]); the first is
        the editing prompt proper, the others paraphrases a method may also use (kn-opt does); prompts
        held out for measuring generalization are not part of a request.
    old, new: the objects as they follow the prompts (a `Continuation` keeps its separator).
    subject: the subject as written in the prompts (ROME reads the key at its last token).
    neurons: the fact's knowledge neurons (dai, scale and kn-opt write through them).
    keep: prompts whose next-token distributions the edit should keep (kn-opt's KL term).
    """

    prompts: tuple[str, ...]
    old: str
    new: str
    subject: str | None = None
    neurons: tuple[Neuron, ...] = ()
    keep: tuple[str, ...] = field(default=())

    @property
    def prompt(self) -> str:
        return self.prompts[0]


class Method:
    """Base class of the edit methods (each a frozen dataclass of its settings)."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()  # Request fields the method cannot do without ("neurons", "subject")
    causal_only: ClassVar[bool] = False
    writes_slots: ClassVar[bool] = False  # the edit only writes value slots (`kn.edits.rows` can batch it)

    def apply(self, lm: LM, requests: Sequence[Request]) -> ContextManager[None]:
        raise NotImplementedError

    def touched(self, lm: LM, requests: Sequence[Request]) -> tuple[int, int]:
        """(neurons, parameters) the edit of `requests` writes or scales."""
        return 0, 0

    def as_row(self, lm: LM, requests: Sequence[Request]):
        """The edit of `requests` as a `kn.edits.rows.Row` (a change of value slots) when it is one that
        `Method.writes_slots` does not cover (scale's activations), else None. Read inside the edit."""
        return None

    def chosen(self, lm: LM, requests: Sequence[Request]) -> list[dict]:
        """Per request, what the method chose for it when it made the edit (recorded with the request's
        metrics; e.g. rome's traced layer); {} each by default."""
        return [{} for _ in requests]

    def to_dict(self) -> dict:
        return {"method": self.name, **dataclasses.asdict(self)}


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Add an edit method (a frozen dataclass subclass of `Method` with a new `name`)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"edit method {cls.__name__}: must be a frozen dataclass of its settings")
    if cls.name in METHODS:
        raise ValueError(f"an edit method named {cls.name!r} is registered already ({METHODS[cls.name].__qualname__})")
    METHODS[cls.name] = cls
    return cls


# the sets of a fact's neurons a neuron method edits through, in this order: own (its knowledge neurons in the
# edit's language), likn (those it has in every language with neurons), specific (own but not likn)
NEURON_SETS = ("own", "likn", "specific")


def uses_neurons(name: str) -> bool:
    """Whether the method registered as `name` edits through the fact's knowledge neurons (it `needs`
    them: dai, scale, kn-opt); False for a name not registered."""
    return name in METHODS and "neurons" in METHODS[name].needs


def method(spec: str | Method, **settings) -> Method:
    """A method value from its name and settings (`method("rome", layer=4)`), or the value itself."""
    if isinstance(spec, Method):
        if settings:
            return dataclasses.replace(spec, **settings)
        return spec
    if spec not in METHODS:
        raise checks.ArgumentError(f"unknown edit method {spec!r}; choose one of {sorted(METHODS)} (kn.edits.METHODS)")
    names = {f.name for f in dataclasses.fields(METHODS[spec])}
    bad = sorted(set(settings) - names)
    if bad:
        raise checks.ArgumentError(f"edit method {spec!r} has no setting {bad[0]!r}; its settings are {sorted(names)}")
    return METHODS[spec](**settings)


def check_requests(lm: LM, m: Method, requests) -> list[Request]:
    """The requests as a list, each checked once against the method's needs."""
    if isinstance(requests, Request):
        requests = [requests]
    out = list(requests)
    if not out:
        raise checks.ArgumentError("requests is empty; pass at least one kn.edits.Request")
    if m.causal_only and lm.masked:
        raise checks.ArgumentError(f"edit method {m.name!r} edits causal LMs only; {lm.name} is a masked LM")
    for i, r in enumerate(out):
        if not isinstance(r, Request):
            raise checks.ArgumentError(f"requests[{i}] must be a kn.edits.Request, got {type(r).__name__}")
        checks.texts(r.prompts, f"requests[{i}].prompts")
        checks.text(r.old, f"requests[{i}].old"), checks.text(r.new, f"requests[{i}].new")
        if "neurons" in m.needs:
            if not r.neurons:
                raise checks.ArgumentError(f"edit method {m.name!r} writes through the fact's knowledge neurons: "
                                           f"requests[{i}].neurons is empty (locate them first, kn.locate)")
            checks.neurons(lm, r.neurons, f"requests[{i}].neurons")
        if "subject" in m.needs:
            checks.text(r.subject, f"requests[{i}].subject")
            for p in r.prompts:
                if r.subject not in p.split(MASK)[0]:
                    raise checks.ArgumentError(f"edit method {m.name!r} reads the key at the subject's last token: "
                                               f"requests[{i}].subject {r.subject!r} is not in its prompt {p!r}")
    return out


def edit(lm: LM, m: str | Method, requests: Request | Iterable[Request], **settings) -> ContextManager[None]:
    """Inside the block `lm` reads each request's `new` object (edited with method `m`, a name of
    `METHODS` or a method value); on exit it is bit-identical to before."""
    m = method(m, **settings)
    return m.apply(lm, check_requests(lm, m, requests))


@contextmanager
def restored(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """The tensors' values saved on entry and copied back on exit (bit-identical)."""
    saved = [(t, t.detach().clone()) for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, v in saved:
                t.copy_(v)


def slot_rows_hook(lm: LM, layer: int, index: torch.Tensor | None, delta: torch.Tensor) -> tuple:
    """A hook adding what `delta` [len(index) or width, hidden] would add if added to the layer's value
    slots (rows `index`, all rows for None): out += act[..., index] @ delta. Differentiable in delta,
    so a method can optimise a change of the slots without touching the weights."""
    def fn(module, args, output):
        act = args[0]
        a = act if index is None else act[..., index.to(act.device)]
        return output + (a @ delta.to(a.dtype)).to(output.dtype)
    return (lm.down_proj(layer), "post", fn)


def nll(lm: LM, prompt: str, answer: str, *, first_only: bool = False) -> torch.Tensor:
    """-log P(answer | prompt), teacher forced, differentiable (a sum over the answer's tokens). A causal LM
    reads every answer token from one pass over the prompt and the answer but its last token; only the
    answer's positions reach the output layer."""
    from ..hooks import head_at, head_from, hooked
    from ..tokens import targets

    ts = targets(lm, prompt, answer)[: 1 if first_only else None]
    if lm.masked:  # each token its own [MASK] context
        rows = []
        for t in ts:
            with hooked([head_at(lm, t.pos)]):
                rows.append(lm.model(input_ids=t.ids, use_cache=False).logits[0, 0])
        logits = torch.stack(rows)
    else:  # the last token's context holds every earlier one's; positions ts[0].pos .. ts[-1].pos
        with hooked([head_from(lm, ts[0].pos)]):
            logits = lm.model(input_ids=ts[-1].ids, use_cache=False).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    return -lp[torch.arange(len(ts), device=lp.device), torch.tensor([t.gold for t in ts], device=lp.device)].sum()


def log_probs(lm: LM, prompt: str) -> torch.Tensor:
    """log P(next token | prompt) [vocab] at the answer position, differentiable."""
    from ..hooks import head_at, hooked
    from ..tokens import query

    ids, pos = query(lm, prompt)
    with hooked([head_at(lm, pos)]):
        return torch.log_softmax(lm.model(input_ids=ids, use_cache=False).logits[0, 0].float(), -1)


def batch_losses(lm: LM, pairs: Sequence[tuple[str, str]], keep: Sequence[str] = ()
                 ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(`nll` of each (prompt, answer) pair [len(pairs)], the nll of its first token alone [len(pairs)],
    `log_probs` of each keep prompt [vocab] each), differentiable. A causal LM reads them from one
    right-padded pass, row r the r-th pair's prompt and answer but its last token, then the keep prompts
    (causal attention never reads the padding to a row's right), and only the read positions reach the
    output layer; a masked LM reads them one by one."""
    from ..hooks import hooked
    from ..tokens import pad_id, query, right_padded, targets

    if lm.masked:
        return (torch.stack([nll(lm, p, a) for p, a in pairs]) if pairs else torch.zeros(0),
                torch.stack([nll(lm, p, a, first_only=True) for p, a in pairs]) if pairs else torch.zeros(0),
                [log_probs(lm, p) for p in keep])
    rows, reads, gold, owner = [], [], [], []  # reads: (row, position) reaching the head
    for i, (p, a) in enumerate(pairs):
        ts = targets(lm, p, a)
        rows.append(ts[-1].ids[0].tolist())
        reads += [(i, t.pos) for t in ts]
        gold += [t.gold for t in ts]
        owner += [i] * len(ts)
    for p in keep:
        ids, pos = query(lm, p)
        rows.append(ids[0].tolist())
        reads.append((len(rows) - 1, pos))
    dev = lm.device
    if not rows:
        return torch.zeros(0, device=dev), torch.zeros(0, device=dev), []
    ids, mask = right_padded(rows, pad_id(lm), dev)
    r_at, p_at = (torch.tensor(x, device=dev) for x in zip(*reads))

    def head(module, args, kwargs):  # [rows, seq, d] -> [1, reads, d]
        return (args[0][r_at, p_at][None].contiguous(), *args[1:]), kwargs

    with hooked([(lm.head, "pre", head)]):
        lp = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[0].float(), -1)
    n = len(gold)
    token = -lp[torch.arange(n, device=dev), torch.tensor(gold, dtype=torch.long, device=dev)]
    owner_t = torch.tensor(owner, dtype=torch.long, device=dev)
    sums = torch.zeros(len(pairs), device=dev).index_add(0, owner_t, token)
    firsts = [owner.index(i) for i in range(len(pairs))]
    return sums, token[torch.tensor(firsts, dtype=torch.long, device=dev)], list(lp[n:])
