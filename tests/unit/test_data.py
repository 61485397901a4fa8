"""kn.data: the fact schema, the built-in fact set, the PARAREL / BMLAMA loaders, preparation.

Loader tests read the read-only copies in ``../shared/data`` (relative to the repository root) and
skip, saying so, where that folder is absent (a user's clone). Nothing is copied into the project.
"""
from __future__ import annotations

import ast
import functools
import http.server
import re
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

import kn.data as D
from kn.data import bmlama, builtin_set, fetch, prepare as P, templates as T
from kn.data.schema import Fact, FactSet

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
LANGS = ("en", "zh", "fr", "es", "de", "ru")


def shared(name: str) -> Path:
    """Path of a shared dataset, or skip the test with a visible reason."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"shared data {path} not present (only on the project's machines and CI)")
    return path


@pytest.fixture(scope="module")
def pararel():
    return D.load_pararel(shared("pararel"))


@pytest.fixture(scope="module")
def bm17():
    return D.load_bmlama(shared("bmlama17"))


@pytest.fixture(scope="module")
def facts():
    return D.builtin()


# -- boundaries --------------------------------------------------------------------------------
def test_data_imports_no_model_libraries():
    for path in (ROOT / "kn" / "data").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not names & {"torch", "transformers"}, f"{path.name} imports {names & {'torch', 'transformers'}}"


# -- templates ------------------------------------------------------------------------------------
def test_object_last_accepts_trailing_punctuation_only():
    assert T.object_last("The capital of [X] is [Y] .")
    assert T.object_last("[X]的首都是[Y]。")
    assert T.object_last("Réponse : [Y].")
    assert not T.object_last("[Y] is the capital of [X].")
    assert not T.object_last("[X] and [Y] are twin cities.")


def test_fill_subject_surface_rules():
    assert T.fill_subject("La capitale de [X] est [Y].", "le Japon", "fr", inflect=True) == "La capitale du Japon est [Y]."
    assert T.fill_subject("[X] a pour capitale [Y].", "la France", "fr", inflect=True) == "La France a pour capitale [Y]."
    assert T.fill_subject("Le lieu de naissance de [X] est [Y].", "Albert Einstein", "fr", inflect=True) == \
        "Le lieu de naissance d'Albert Einstein est [Y]."
    assert T.fill_subject("El símbolo químico de [X] es [Y].", "el hierro", "es", inflect=True) == \
        "El símbolo químico del hierro es [Y]."
    # loaded data is rendered verbatim
    assert T.fill_subject("[X] is a subclass of [Y].", "ecology", "en") == "ecology is a subclass of [Y]."
    with pytest.raises(ValueError):
        T.check("[X] and [Y] and [Y]")


def _fact(**kw) -> Fact:
    base = dict(fact_id="t/1", relation="capital",
                subject={"en": "France", "zh": "法国"}, object={"en": "Paris", "zh": "巴黎"},
                templates={"en": ["The capital of [X] is [Y].", "[Y] is the capital of [X].", "[X] , capital: [Y] ."],
                           "zh": ["[X]的首都是[Y]。"]},
                distractors={"en": ["Rome", "Berlin", "Madrid"], "zh": ["罗马", "柏林", "马德里"]})
    base.update(kw)
    return Fact(**base)


def test_fact_rendering():
    f = _fact()
    assert f.languages == ("en", "zh")
    assert f.prompts("en")[0] == "The capital of France is [Y]."
    assert f.cloze("en") == ["The capital of France is [MASK].", "[MASK] is the capital of France.",
                             "France , capital: [MASK] ."]
    assert f.cloze("en", mask="<mask>")[1] == "<mask> is the capital of France."
    assert f.causal_prompts("en") == ["The capital of France is", "France , capital:"]
    assert f.causal_pairs("en")[0] == ("The capital of France is", " Paris")
    assert f.causal_pairs("zh") == [("法国的首都是", "巴黎")]  # no space in Chinese
    assert f.sentences("en")[1] == "Paris is the capital of France."
    with pytest.raises(KeyError):
        f.prompts("fr")
    assert Fact.from_dict(f.to_dict()) == f
    assert hash(f) == hash(_fact())


def test_factset_api(tmp_path):
    a = _fact()
    b = _fact(fact_id="t/2", relation="currency", subject={"en": "Japan"}, object={"en": "yen"},
              templates={"en": ["The currency of [X] is the [Y]."]}, distractors={"en": ["euro"]})
    fs = FactSet([a, b], "toy")
    assert len(fs) == 2 and list(fs) == [a, b] and fs[1] is b and fs["t/2"] is b
    assert fs.relations == ("capital", "currency") and fs.languages == ("en", "zh")
    assert [f.fact_id for f in fs.filter(language="zh")] == ["t/1"]
    assert [f.fact_id for f in fs.filter(relation=["currency"])] == ["t/2"]
    assert fs.by_id() == {"t/1": a, "t/2": b} and "t/1" in fs and fs.get("nope") is None
    df = fs.to_frame()
    assert len(df) == 3 and set(df.columns) >= {"fact_id", "relation", "language", "subject", "object", "distractors"}
    assert FactSet.load(fs.save(tmp_path / "f.jsonl")) == fs
    assert FactSet.load(tmp_path / "f.jsonl").fingerprint() == fs.fingerprint()
    with pytest.raises(ValueError, match="duplicate"):
        FactSet([a, a])


# -- the built-in fact set ------------------------------------------------------------------------
def test_builtin_size(facts):
    counts = Counter(f.relation for f in facts)
    assert len(counts) >= 12, counts
    assert min(counts.values()) >= 40, counts
    assert set(LANGS) <= set(facts.languages)


def test_builtin_every_fact_in_every_language(facts):
    for f in facts:
        assert set(LANGS) <= set(f.languages), f.fact_id
        for lang in LANGS:
            assert f.subject[lang].strip() and f.object[lang].strip(), (f.fact_id, lang)


def test_builtin_templates(facts):
    for rel in facts.relations:
        rel_facts = facts.filter(relation=rel)
        first = rel_facts[0]
        for f in rel_facts:
            assert f.templates == first.templates, f"{f.fact_id}: templates differ within {rel}"
        for lang in LANGS:
            ts = first.templates[lang]
            for t in ts:
                assert t.count("[Y]") == 1 and t.count("[X]") == 1, (rel, lang, t)
                if T.object_last(t):  # the answer joins the prefix as kn's kernels expect
                    before = t[: t.index("[Y]")]
                    assert before[-1].isspace() or T.is_cjk(before[-1]), (rel, lang, t)
            n_causal = sum(T.object_last(t) for t in ts)
            assert n_causal >= (4 if lang == "en" else 2), (rel, lang, n_causal)


def test_builtin_distractors(facts):
    for f in facts:
        for lang in LANGS:
            d = f.distractors[lang]
            assert len(d) >= 3, (f.fact_id, lang)
            assert len(set(d)) == len(d), (f.fact_id, lang, d)
            assert f.object[lang] not in d, (f.fact_id, lang, d)
        # aligned across languages: same number of distractors everywhere
        assert len({len(f.distractors[l]) for l in LANGS}) == 1


def test_builtin_ids_stable_and_unique(facts):
    ids = [f.fact_id for f in facts]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(rf"{re.escape(f.relation)}/[a-z0-9_A-Z]+", f.fact_id) for f in facts)
    fresh = builtin_set._load.__wrapped__()  # a second, uncached load gives the same data
    assert fresh.fingerprint() == facts.fingerprint()
    f = facts["capital/france"]
    assert (f.object["en"], f.object["zh"], f.object["ru"]) == ("Paris", "巴黎", "Париж")


def test_builtin_rendering(facts):
    assert facts["capital/japan"].prompts("fr")[0] == "La capitale du Japon est [Y]."
    assert facts["element_symbol/iron"].prompts("es")[0] == "El símbolo químico del hierro es [Y]."
    assert facts["capital/france"].causal_pairs("zh")[0] == ("法国的首都是", "巴黎")
    for f in facts:
        for lang in LANGS:
            for p in f.prompts(lang):
                assert "[X]" not in p and p.count("[Y]") == 1 and p[0] == p[0].upper(), (f.fact_id, lang, p)
            for p in f.causal_prompts(lang):
                assert p == p.rstrip() and "[Y]" not in p
            assert all(f.object[lang] in s for s in f.sentences(lang))


# -- PARAREL ----------------------------------------------------------------------------------------
def test_pararel_drops_relations_with_few_patterns(pararel):
    root = shared("pararel")
    n_patterns = {p.stem: sum(1 for line in p.read_text().splitlines() if line.strip())
                  for p in (root / "graphs_json").glob("P*.jsonl")}
    expected = {r for r, n in n_patterns.items() if n > 3}
    assert set(pararel.relations) == expected and len(expected) == 34  # Dai et al. use 34 relations
    assert set(pararel.info["dropped"]) == {r for r, n in n_patterns.items() if n <= 3}
    for f in pararel.filter(relation="P36")[:3]:
        assert len(f.templates["en"]) == n_patterns["P36"]
    assert len(D.load_pararel(root, min_patterns=1).relations) == 39


def test_pararel_facts(pararel):
    root = shared("pararel")
    lines = [line for line in (root / "trex_lms_vocab" / "P36.jsonl").read_text().splitlines() if line.strip()]
    p36 = pararel.filter(relation="P36")
    assert len(p36) == len(lines)
    assert len({f.fact_id for f in pararel}) == len(pararel)
    objects_of: dict = {}
    for f in p36:
        objects_of.setdefault(f.subject["en"], set()).add(f.object["en"])
    for f in p36:
        d = f.distractors["en"]
        assert 1 <= len(d) <= 5 and not set(d) & objects_of[f.subject["en"]]
    again = D.load_pararel(root, relations=["P36"])
    assert [f.distractors for f in again] == [f.distractors for f in p36]  # deterministic
    assert any(len(f.causal_prompts("en")) >= 3 for f in p36)


# -- BMLAMA -----------------------------------------------------------------------------------------
def test_bmlama17_counts_and_blocks(bm17):
    root = shared("bmlama17")
    langs = sorted(p.stem for p in root.glob("*.tsv"))
    assert sorted(bm17.languages) == langs
    assert len(bm17) == 6792
    assert all(set(f.languages) == set(langs) for f in bm17)
    info = bm17.info
    assert all(info["blocks_agree"].values()), info["blocks_agree"]
    assert all(info["blocks"][l] == info["block_starts"] for l in langs)
    assert len(bm17.relations) == 41 and sum(info["relations"].values()) == 6792
    assert bm17.relations[:3] == ("P19", "P20", "P279") and bm17.relations[-1] == "P361"
    assert Counter(f.relation for f in bm17)["P36"] == 336


def test_bmlama17_rows_parse_by_position(bm17):
    root = shared("bmlama17")
    for lang in ("en", "zh", "ru"):
        rows = bmlama.read_tsv((root / f"{lang}.tsv").read_text(encoding="utf-8"))
        assert len(rows) == 6792
        for i in (0, 4000, 6791):
            prompt, ans, cands, subj = rows[i]
            f = bm17[i]
            assert f.subject[lang] == subj and f.object[lang] == ans
            assert f.prompts(lang)[0].replace("[Y]", "<mask>") == prompt  # rendering gives the file's prompt
            assert set(f.distractors[lang]) == set(cands) - {ans}
    assert all(f.object[l] not in f.distractors[l] for f in bm17 for l in f.languages)
    assert bm17[0].causal_pairs("zh")[0][1] == bm17[0].object["zh"]  # no space before a Chinese answer


def test_bmlama_relation_names_do_not_depend_on_languages(bm17):
    sub = D.load_bmlama(shared("bmlama17"), ["zh", "ja"])
    assert sub.languages == ("zh", "ja")
    assert [f.relation for f in sub] == [f.relation for f in bm17]


def test_bmlama_53_style_files(tmp_path):
    """The 53-language variant: same columns, LF endings, a subset of LAMA's relations."""
    rows = {
        "en": [("Dante died in <mask>.", "Ravenna", "Rome, Ravenna", "Dante"),
               ("Galileo died in <mask>.", "Arcetri", "Arcetri, Pisa", "Galileo"),
               ("ecology is a subclass of <mask>.", "biology", "alphabet, biology", "ecology")],
        "de": [("Dante starb in <mask>.", "Ravenna", "Rom, Ravenna", "Dante"),
               ("Galileo starb in <mask>.", "Arcetri", "Arcetri, Pisa", "Galileo"),
               ("Ökologie ist eine Unterklasse von <mask>.", "Biologie", "Alphabet, Biologie", "Ökologie")],
    }
    d = tmp_path / "BMLAMA53"
    d.mkdir()
    for lang, rs in rows.items():
        body = "Prompt\tAns\tCandidate Ans\tSubject\n" + "".join("\t".join(r) + "\n" for r in rs)
        (d / f"{lang}.tsv").write_text(body, encoding="utf-8")
    fs = D.load_bmlama(d)
    assert fs.name == "bmlama53" and len(fs) == 3 and fs.relations == ("P20", "P279")
    assert fs[2].distractors["de"] == ("Alphabet",) and fs[0].fact_id == "bmlama53:00000"


def test_a_new_bmlama_language_is_data_not_code(tmp_path):
    """A language code no list in kn names (Korean, Klingon's "tlh"): its file is read like any other."""
    rows = {
        "en": [("Paris is the capital of <mask>.", "France", "France, Spain", "Paris")],
        "ko": [("파리는 <mask>의 수도이다.", "프랑스", "프랑스, 스페인", "파리")],
        "tlh": [("Paris vengHom <mask>.", "France", "France, Spain", "Paris")],
    }
    d = tmp_path / "BMLAMA-new"
    d.mkdir()
    for lang, rs in rows.items():
        (d / f"{lang}.tsv").write_text("Prompt\tAns\tCandidate Ans\tSubject\n" + "".join("\t".join(r) + "\n" for r in rs),
                                       encoding="utf-8")
    assert "tlh" not in bmlama.LANGUAGES17 + bmlama.LANGUAGES53
    fs = D.load(f"bmlama:{d}", languages=["en", "ko", "tlh"])
    assert fs.languages == ("en", "ko", "tlh") and fs[0].object["ko"] == "프랑스"
    assert fs[0].templates["ko"] == ("[X]는 [Y]의 수도이다.",) and fs[0].distractors["tlh"] == ("Spain",)


def test_lama_names():
    full = [t for _, t in bmlama.LAMA_TEMPLATES]
    assert bmlama.lama_names(full) == [pid for pid, _ in bmlama.LAMA_TEMPLATES]
    # "[X] is located in [Y]." alone could be any of four relations
    assert bmlama.lama_names(["[X] is located in [Y]."]) == ["bmlama-00"]
    assert bmlama.lama_names(["[X] was born in [Y].", "something else"]) == ["bmlama-00", "bmlama-01"]


# -- URLs: download, cache, offline -----------------------------------------------------------------
def test_offline_url_gives_a_clear_error(tmp_path):
    url = "http://127.0.0.1:9/x"
    with pytest.raises(D.DataUnavailableError, match=r"could not fetch http://127\.0\.0\.1:9/x.*local"):
        D.load_pararel(url, relations=["P36"], cache=tmp_path, timeout=2)
    with pytest.raises(D.DataUnavailableError, match="pass its local directory"):
        D.load_bmlama(url, languages=["en"], cache=tmp_path, timeout=2)


@pytest.fixture()
def http_root():
    """Serve ../shared/data over HTTP on localhost (real 404s for missing files)."""
    root = shared("")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


def test_url_download_and_cache(http_root, tmp_path, pararel, bm17):
    base, server = http_root
    cache = tmp_path / "cache"
    p = D.load_pararel(f"{base}/pararel", relations=["P36", "P17", "P31"], cache=cache, timeout=5)
    assert p.relations == ("P36",) and p.info["dropped"] == {"P17": 3, "P31": 0}
    assert [f.fact_id for f in p] == [f.fact_id for f in pararel.filter(relation="P36")]
    b = D.load_bmlama(f"{base}/bmlama17", ["en", "zh"], cache=cache, timeout=5)
    assert len(b) == 6792 and [f.relation for f in b] == [f.relation for f in bm17]
    server.shutdown()  # offline now: everything comes from the cache
    again = D.load_bmlama(f"{base}/bmlama17", ["zh"], cache=cache, timeout=1)
    assert [f.object["zh"] for f in again] == [f.object["zh"] for f in b]
    assert any(cache.rglob("zh.tsv"))


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("KN_DATA_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fetch.cache_dir() == tmp_path / ".cache" / "kn" / "data"
    monkeypatch.setenv("KN_DATA_CACHE", str(tmp_path / "x"))
    assert D.cache_dir() == tmp_path / "x"


# -- preparing facts for a model (fake tokenizer) ----------------------------------------------------
class FakeTokenizer:
    """GPT-like: words keep their leading space; words longer than 6 characters split in two+ pieces."""

    mask_token = "[MASK]"

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def _pieces(self, text: str) -> list[str]:
        out = []
        for tok in re.findall(r"\[MASK\]| ?[^\W\d_]+| ?\d+| ?[^\w\s]", text):
            while len(tok.strip()) > 6:
                cut = 6 + (tok[0] == " ")
                out.append(tok[:cut])
                tok = tok[cut:]
            out.append(tok)
        return out

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.vocab.setdefault(p, len(self.vocab)) for p in self._pieces(text)]}

    def decode(self, ids):
        inv = {i: t for t, i in self.vocab.items()}
        return "".join(inv[i] for i in ids)


def _model(masked=False):
    return SimpleNamespace(masked=masked, tokenizer=FakeTokenizer())


def test_prepare_causal(facts):
    lm = _model()
    sub = facts.filter(relation=["capital", "currency"])
    prep = P.prepare(sub, lm, "en")
    assert len(prep) == len(sub) and not prep.dropped
    paris = next(p for p in prep if p.fact_id == "capital/france")
    assert paris.prompts == tuple(facts["capital/france"].causal_prompts("en")) and len(paris.prompts) == 5
    assert set(paris.answers) == {" Paris"} and paris.single_token and paris.gold_token == " Paris"
    assert paris.answer_ids == tuple(lm.tokenizer(" Paris")["input_ids"]) and paris.consistent
    ba = next(p for p in prep if p.fact_id == "capital/argentina")
    assert ba.n_answer_tokens == 2 and not ba.single_token  # " Buenos", " Aires"
    assert len(paris.distractor_ids) == len(paris.distractors) >= 3
    counts = prep.counts
    assert counts["facts"].sum() == len(sub) and (counts["single_token"] + counts["multi_token"] == counts["kept"]).all()
    df = prep.to_frame()
    assert len(df) == len(prep) and df["n_answer_tokens"].min() >= 1


def test_prepare_chinese_answer_has_no_space(facts):
    prep = P.prepare(facts.filter(relation="capital")[:3], _model(), "zh")
    assert all(not a.startswith(" ") for p in prep for a in p.answers)
    assert prep[0].prompts[0] == "法国的首都是"


def test_prepare_masked_uses_every_template(facts):
    prep = P.prepare(facts.filter(relation="capital")[:2], _model(masked=True), ["en", "fr"])
    en = [p for p in prep if p.language == "en"][0]
    assert len(en.prompts) == 6 and all(q.count("[MASK]") == 1 for q in en.prompts)
    assert en.prompts[-1] == "[MASK] is the capital of France." and en.answers[-1] == "Paris"
    assert en.answers[0] == " Paris"
    assert {p.language for p in prep} == {"en", "fr"}


def test_prepare_drops_with_reasons():
    lm = _model()
    only_first = _fact(templates={"en": ["[Y] is the capital of [X]."], "zh": ["[X]的首都是[Y]。"]})
    prep = P.prepare([only_first, _fact(fact_id="t/2")], lm, "en", min_prompts=2)
    assert [p.fact_id for p in prep] == ["t/2"]
    assert "usable prompts" in prep.dropped[("t/1", "en")]
    long = _fact(fact_id="t/3", object={"en": "Constantinople", "zh": "君士坦丁堡"})
    prep = P.prepare([long], lm, "en", max_answer_tokens=1)
    assert len(prep) == 0 and "tokens" in prep.dropped[("t/3", "en")]
    assert prep.counts.iloc[0]["dropped"] == 1


def test_continuation_ids_boundary_merge():
    class Merging:
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text.replace("is Pa", "\x01")]

    ids, clean = P.continuation_ids(Merging(), "it is", " Paris")
    assert not clean and ids  # the merged token is kept with the answer


def test_filter_known(facts):
    lm = _model()
    prep = P.prepare(facts.filter(relation="capital")[:4], lm, "en")
    gold = {q: p.gold_token for p in prep for q in p.prompts}
    n = {p.fact_id: len(p.prompts) for p in prep}
    first = prep[0]
    right_half = set(first.prompts[: (n[first.fact_id] + 1) // 2])  # right on just over half

    def probe(prompt):
        if prompt in first.prompts:
            return [gold[prompt], " x"] if prompt in right_half else [" x", " y"]
        return [" x"] if prompt in prep[1].prompts else [gold[prompt].strip()]  # stripped strings match too

    known = P.filter_known(prep, probe)
    kept = [p.fact_id for p in known.kept]
    assert first.fact_id in kept and prep[1].fact_id not in kept and len(kept) == 3
    assert known.hits[(prep[1].fact_id, "en")] == (0, n[prep[1].fact_id])
    c = known.counts.iloc[0]
    assert (c["facts"], c["known"], c["share"]) == (4, 3, 0.75)
    # ids and Prediction-like objects work as probe outputs
    by_id = P.filter_known(prep, lambda q: [next(p.gold_id for p in prep if q in p.prompts)])
    assert len(by_id.kept) == 4
    pred = SimpleNamespace(token="?", prob=1.0, id=prep[2].gold_id)
    assert P.is_hit([pred], prep[2]) and not P.is_hit([pred], prep[3])


def test_the_agreement_set_is_minimal_pairs():
    """kn.data.agreement: per noun a singular and a plural item whose prompts differ only in the noun
    phrase, each ending before the verb, the other number's verb as the distractor."""
    from kn.data import load
    from kn.data.agreement import COPULA, NOUNS

    fs = list(load("agreement"))
    assert len(fs) == 2 * len(NOUNS["en"]) and {f.relation for f in fs} == {"agreement_singular", "agreement_plural"}
    by_id = {f.fact_id: f for f in fs}
    for f in fs:
        if f.relation != "agreement_singular":
            continue
        twin = by_id[f.fact_id.replace("singular", "plural")]
        for lang in ("en", "fr"):
            sg, pl = f.causal_prompts(lang), twin.causal_prompts(lang)
            assert len(sg) == len(pl) == 5
            for a, b in zip(sg, pl):
                assert a.replace(f.subject[lang], "#") == b.replace(twin.subject[lang], "#")  # only the noun phrase differs
            assert (f.object[lang], twin.object[lang]) == COPULA[lang]
            assert f.distractors[lang] == (twin.object[lang],)
