"""A syntactic control set for the knowledge-neuron critique (Niu et al., ICLR 2024): subject-verb
number agreement, built as minimal pairs from templates, in English and French.

Each "fact" is a noun phrase and the copula that agrees with it: ("the cat", "is") in the relation
"agreement_singular", ("the cats", "are") in "agreement_plural"; the same nouns in both, so every
singular fact has a minimal-pair twin. Prompts end right before the verb (object-last, as causal
LMs need), after contexts that do not decide the number themselves. If attribution and refinement
find "neurons" for this as readily as for facts, those neurons are not evidence of stored knowledge.
(Niu et al. use BLiMP's determiner-noun agreement with masked LMs; for causal LMs the determiner
precedes its noun, so the agreement target here is the verb.)
"""
from __future__ import annotations

from .schema import Fact, FactSet

RELATIONS = ("agreement_singular", "agreement_plural")
# (singular, plural) noun phrases per language, and the copula of each number
NOUNS = {
    "en": [("the cat", "the cats"), ("the dog", "the dogs"), ("the book", "the books"), ("the horse", "the horses"),
           ("the car", "the cars"), ("the house", "the houses"), ("the table", "the tables"),
           ("the flower", "the flowers"), ("the teacher", "the teachers"), ("the road", "the roads")],
    "fr": [("le chat", "les chats"), ("le chien", "les chiens"), ("le livre", "les livres"),
           ("le cheval", "les chevaux"), ("la voiture", "les voitures"), ("la maison", "les maisons"),
           ("la table", "les tables"), ("la fleur", "les fleurs"), ("le professeur", "les professeurs"),
           ("la route", "les routes")],
}
COPULA = {"en": ("is", "are"), "fr": ("est", "sont")}
TEMPLATES = {
    "en": ["I think that [X] [Y]", "In the garden, [X] [Y]", "Last night, [X] [Y]", "You know, [X] [Y]",
           "She told me that [X] [Y]"],
    "fr": ["Je pense que [X] [Y]", "Dans le jardin, [X] [Y]", "Hier soir, [X] [Y]", "Tu sais, [X] [Y]",
           "Elle m'a dit que [X] [Y]"],
}


def agreement() -> FactSet:
    """The agreement set: a fact per (noun, number), in every language of `NOUNS`."""
    facts = []
    n = len(NOUNS["en"])
    for number, relation in enumerate(RELATIONS):
        for i in range(n):
            name = NOUNS["en"][i][0].split()[-1]
            facts.append(Fact(f"{relation}/{name}", relation,
                              {lang: NOUNS[lang][i][number] for lang in NOUNS},
                              {lang: COPULA[lang][number] for lang in NOUNS},
                              {lang: TEMPLATES[lang] for lang in NOUNS},
                              {lang: (COPULA[lang][1 - number],) for lang in NOUNS}, source="agreement"))
    return FactSet(facts, "agreement")
