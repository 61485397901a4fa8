"""Prompt templates: `[X]` marks the subject, `[Y]` the object slot (PARAREL's notation).

A template such as ``"The capital of [X] is [Y]."`` is rendered per fact and language. A template
is *object-last* when nothing but punctuation and spaces follows `[Y]`; only those serve causal LMs,
which predict the object as the continuation of the text before `[Y]` (book chapter "Facts and
prompts"). The prefix is returned without its trailing space: the space belongs to the answer
token (``" Paris"``), which is how causal tokenizers split words. Scripts without spaces (Chinese,
Japanese) glue the answer to the prefix.
"""
from __future__ import annotations

import re
import unicodedata

SUBJECT = "[X]"
OBJECT = "[Y]"
MASK = "[MASK]"  # the answer slot of a masked-LM prompt, as kn's kernels read it

# French and Spanish article contractions that appear when an articled subject ("le Japon",
# "el hierro") follows a preposition in the template ("de [X]" -> "du Japon", "del hierro").
_CONTRACTIONS = {
    "fr": (("de le ", "du "), ("de les ", "des "), ("à le ", "au "), ("à les ", "aux ")),
    "es": (("de el ", "del "), ("a el ", "al ")),
}
_FR_VOWELS = "AEIOUÉÈÊÂÎÔÛaeiouéèêâîôûœŒ"


def _ignorable(ch: str) -> bool:
    """Characters allowed after an object-last slot: spaces, punctuation, format marks (ZWSP)."""
    cat = unicodedata.category(ch)
    return ch.isspace() or cat.startswith("P") or cat == "Cf"


def check(template: str, *, need_subject: bool = False) -> str:
    """Return `template` if it has exactly one `[Y]` and at most one `[X]`, else raise ValueError."""
    if template.count(OBJECT) != 1:
        raise ValueError(f"a template needs exactly one {OBJECT} object slot: {template!r}")
    n = template.count(SUBJECT)
    if n > 1 or (need_subject and n != 1):
        raise ValueError(f"a template needs {'exactly' if need_subject else 'at most'} one {SUBJECT}: {template!r}")
    return template


def object_last(template: str) -> bool:
    """True if only spaces and punctuation follow the `[Y]` slot ("[X] is in [Y] ." counts)."""
    i = template.find(OBJECT)
    if i < 0:
        return False
    tail = template[i + len(OBJECT):]
    return all(_ignorable(c) for c in tail) and template[:i].strip() != ""


def is_cjk(ch: str) -> bool:
    """Ideographs, kana, hangul and CJK punctuation: scripts written without spaces."""
    return ord(ch) >= 0x2E80


def answer_separator(prefix_with_space: str) -> str:
    """What joins a causal prefix to its answer: " " if the template had a space before `[Y]`, else "".

    `prefix_with_space` is the text before `[Y]` as written (not yet stripped): "is [Y]" gives " ",
    Chinese "是[Y]" and a glued slot such as French "l'[Y]" give "".
    """
    return " " if prefix_with_space[-1:].isspace() else ""


NEXT_TOKEN, SENTENCE = "next_token", "sentence"  # a prompt's target: the object alone, or the sentence from it on


class Continuation(str):
    """An answer exactly as it follows its prompt, separator included (" Paris"; "Paris" after "l'"):
    what `kn.data.prepare` makes from a template. The kernels tokenize it as given.

    tail: the text after the object when the template's object is not last (a sentence target: the
    continuation is the rest of the sentence, "マドリード" + tail "に生まれました。"); "" for an answer that
    ends with the object (a next-token target)."""

    def __new__(cls, text: str = "", tail: str = ""):
        self = super().__new__(cls, text)
        self.tail = tail if str(text).endswith(tail) else ""
        return self

    @property
    def target(self) -> str:
        """"sentence" if the continuation runs past the object, else "next_token"."""
        return SENTENCE if self.tail else NEXT_TOKEN


def continuation(left: str, answer: str) -> Continuation:
    """`answer` as it follows the text `left`: a `Continuation` is kept as it is; a plain string (a
    person's "Paris") gets the separator a writer would put, a space unless `left` is empty, ends in
    a space-less script (CJK) or the answer starts in one."""
    if isinstance(answer, Continuation):
        return answer
    answer = answer.strip()
    left = left.rstrip()
    glued = not left or is_cjk(left[-1]) or (answer and is_cjk(answer[0]))
    return Continuation(("" if glued else " ") + answer)


def with_object(answer: str, obj: str) -> Continuation:
    """`obj` in the place of `answer`'s object, `answer`'s separator and tail kept (" Paris" -> " Rome";
    a sentence target's "マドリードに生まれました。" -> "ローマに生まれました。")."""
    tail = getattr(answer, "tail", "")
    return Continuation(answer[: len(answer) - len(answer.lstrip())] + obj.strip() + tail, tail)


def object_of(answer: str) -> str:
    """The object an answer names: without its separator, and without a sentence target's tail."""
    return answer[: len(answer) - len(getattr(answer, "tail", ""))].strip()


def continued(answer: str, obj: str) -> Continuation:
    """`answer` (a recorded string) as a `Continuation` whose tail is what follows the object `obj` in it:
    "" for an answer that ends with its object (a next-token target)."""
    body, o = answer.lstrip(), obj.strip()
    return Continuation(answer, body[len(o):] if o and body.startswith(o) else "")


def tail_of(template_text: str) -> str:
    """The text after `[Y]` that a sentence target scores: what follows the slot, trailing spaces removed
    ("" for an object-last template: punctuation alone is not scored)."""
    i = template_text.find(OBJECT)
    if i < 0 or object_last(template_text):
        return ""
    return template_text[i + len(OBJECT):].rstrip()


def _capitalize(text: str) -> str:
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1:]
        if not (ch.isspace() or ch in "«»\"'“”„("):
            return text
    return text


def fill_subject(template: str, subject: str, language: str = "en", *, inflect: bool = False) -> str:
    """The template with `[X]` replaced by `subject` (`[Y]` kept).

    With `inflect`, the small surface rules of hand-written data apply where the subject is inserted:
    sentence-initial capitalisation ("la France a..." -> "La France a..."), French and Spanish article
    contraction ("de le Japon" -> "du Japon", "de el hierro" -> "del hierro") and French elision
    ("de Albert" -> "d'Albert"). Loaded datasets are rendered verbatim (`inflect=False`).
    """
    if SUBJECT not in template:
        return template
    head, tail = template.split(SUBJECT, 1)
    if inflect:
        lang = language.split("-")[0].lower()
        for before, after in _CONTRACTIONS.get(lang, ()):
            prep, art = before.split()
            if (head.endswith(" " + prep + " ") or head == prep + " ") and subject.startswith(art + " "):
                head = head[: len(head) - len(prep) - 1] + after
                subject = subject[len(art) + 1:]
                break
        if lang == "fr" and (head.endswith(" de ") or head == "de ") and subject[:1] in _FR_VOWELS:
            head = head[:-3] + "d'"
        if not head.strip():
            subject = _capitalize(subject)
    return head + subject + tail


def fill_object(text: str, obj: str, *, inflect: bool = False) -> str:
    """`text` with `[Y]` replaced by `obj` (capitalised when it opens the sentence and `inflect`)."""
    head, tail = text.split(OBJECT, 1)
    if inflect and not head.strip():
        obj = _capitalize(obj)
    return head + obj + tail


def causal_prefix(text: str) -> str:
    """The text before `[Y]`, trailing spaces removed (the answer token carries the space)."""
    return text.split(OBJECT, 1)[0].rstrip()


def cloze(text: str, mask: str = MASK) -> str:
    """`text` with the object slot replaced by `mask` (one mask, whatever the object's length)."""
    return text.replace(OBJECT, mask, 1)


def normalize(template: str) -> str:
    """A comparison key: whitespace collapsed, no space before final punctuation, `<mask>` -> `[Y]`."""
    t = template.replace("<mask>", OBJECT)
    t = re.sub(r"\s+", " ", t).strip()
    return re.sub(r"\s+([.,;:!?。])", r"\1", t)
