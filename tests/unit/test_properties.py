"""Property-based tests of kn's public boundary (Hypothesis): public functions and CLI commands driven with
generated values (text, numbers including NaN, inf, negative and huge, lists with duplicates, wrong
types). Each call gives a valid result or an error raised by kn itself (its innermost frame in kn/, a
ValueError or TypeError, as `kn.checks.ArgumentError` is both) whose message names the argument: never
an exception from inside torch / transformers / numpy, never another kind (IndexError, RuntimeError,
ZeroDivisionError...), never a hang (each example has a deadline), and never a change to files it was
not asked to write. Tiny random models (`kn.testing.tiny_lm`); the whole module runs in well under a
minute on one thread."""
import contextlib
import io
import math
import os
import signal
import traceback
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis (pip install 'kn[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import kn  # noqa: E402
from kn.testing import tiny_lm  # noqa: E402

KN = Path(kn.__file__).resolve().parent
PROFILE = settings(max_examples=40, deadline=3000, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# -- values -----------------------------------------------------------------------------------
WORDS = ["Paris", "France", "capital", "the", "of", "is", "Berlin", "Germany", "[MASK]", "", " ", "Zürich", "東京"]
texts = st.one_of(st.text(max_size=20), st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                    st.sampled_from([0, 1, -1, 0.5, 1e300, -0.0, math.nan, math.inf, -math.inf]))
wrong = st.one_of(st.none(), st.booleans(), st.binary(max_size=4), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                                   max_size=2))
anything = st.one_of(texts, numbers, wrong, st.lists(st.one_of(texts, numbers), max_size=4))
ints = st.one_of(st.integers(-5, 40), st.sampled_from([10**9, -10**9]), numbers, wrong)


def mostly(valid, bad=anything):
    """Valid values three times in four, so that most examples get past the checks and run (a one_of would
    flatten `bad`'s many branches and draw from them mostly)."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else valid)


PROMPTS = {"causal": ["Paris is the capital of", "the capital of France is", "France", "Berlin is in"],
           "masked": ["Paris is the capital of [MASK].", "[MASK] is the capital of France", "the [MASK]"]}
answers = mostly(st.sampled_from([" France", "Paris", " Germany", "France Germany"]))


def neurons_of(lm):
    pair = st.tuples(st.integers(-2, lm.n_layers + 1), st.integers(-2, lm.width + 2))
    return st.one_of(st.lists(pair, max_size=5), st.lists(st.sampled_from([(0, 0), (1, 3)]), max_size=4),  # duplicates
                     anything)


# -- the property -----------------------------------------------------------------------------
class Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail, rather than wait for ever, when a call does not return (Hypothesis's deadline only judges calls
    that return)."""
    def ring(*_):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def outcome(call, names: tuple[str, ...]):
    """call()'s result, or None after checking that what it raised is kn's own error naming one of `names`."""
    try:
        with no_hang():
            out = call()
        hypothesis.event("a result")
        return out
    except (ValueError, TypeError) as err:
        hypothesis.event(f"refused by kn: {str(err)[:50]}")
        frame = traceback.extract_tb(err.__traceback__)[-1]
        where = Path(frame.filename).resolve()
        assert KN in where.parents, f"{type(err).__name__} from outside kn ({where}:{frame.lineno}): {err}"
        text = str(err).lower()
        assert any(n.lower() in text for n in names), f"the error names none of {names}: {err}"
        return None


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def gpt():
    return tiny_lm("GPT-2")


@pytest.fixture(scope="module")
def bert():
    return tiny_lm("BERT")


@pytest.fixture(scope="module")
def models(gpt, bert):
    return {"causal": gpt, "masked": bert}


def finite(x) -> bool:
    import torch

    return bool(torch.isfinite(torch.as_tensor(x, dtype=torch.float64)).all())


# -- public functions -------------------------------------------------------------------------
@PROFILE
@given(kind=st.sampled_from(["causal", "masked"]), data=st.data(), k=mostly(st.integers(1, 60), ints))
def test_probe(models, kind, data, k):
    prompt = data.draw(mostly(st.sampled_from(PROMPTS[kind])))
    out = outcome(lambda: kn.probe(models[kind], prompt, k=k), ("prompt", "k", "[mask]"))
    if out is not None:
        assert len(out) == k and all(0 <= p.prob <= 1 for p in out)


@PROFILE
@given(kind=st.sampled_from(["causal", "masked"]), data=st.data(), answer=answers)
def test_answer_prob(models, kind, data, answer):
    prompt = data.draw(mostly(st.sampled_from(PROMPTS[kind])))
    p = outcome(lambda: kn.answer_prob(models[kind], prompt, answer), ("prompt", "answer", "[mask]"))
    assert p is None or 0 <= p <= 1


@PROFILE
@given(prompt=st.sampled_from(PROMPTS["causal"]), steps=mostly(st.integers(1, 5), ints),
       rule=mostly(st.sampled_from(list(kn.RULES))), baseline=mostly(st.sampled_from(["zero", "amig", None])))
def test_attribute(gpt, prompt, steps, rule, baseline):
    s = outcome(lambda: kn.attribute(gpt, prompt, " France", steps=steps, rule=rule, baseline=baseline),
                ("steps", "rule", "baseline"))
    if s is not None:
        assert s.shape == (gpt.n_layers, gpt.width) and finite(s)


@PROFILE
@given(value=st.one_of(numbers, st.lists(numbers, min_size=1, max_size=3)), at=st.tuples(st.integers(0, 2),
                                                                                       st.integers(0, 47)))
def test_baseline_tensors(gpt, value, at):
    import torch

    base = torch.zeros(gpt.n_layers, gpt.width)
    v = value if isinstance(value, (int, float)) else value[0]
    base[at] = torch.tensor(float(v), dtype=torch.float64).float()  # beyond float32: inf
    s = outcome(lambda: kn.attribute(gpt, "Paris is the capital of", " France", steps=2, baseline=base), ("baseline",))
    assert s is None or (s.shape == (gpt.n_layers, gpt.width) and finite(s))


@PROFILE
@given(data=st.data(), factor=numbers)
def test_interventions(gpt, data, factor):
    neurons = data.draw(mostly(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 47)), max_size=5),
                               neurons_of(gpt)))

    def call():
        with kn.scaled(gpt, neurons, factor):
            return kn.answer_prob(gpt, "Paris is the capital of", " France")

    p = outcome(call, ("neurons", "factor", "layer", "index", "pair"))
    assert p is None or 0 <= p <= 1 or math.isnan(p)


@PROFILE
@given(prompts=mostly(st.lists(st.sampled_from(PROMPTS["causal"]), min_size=1, max_size=4),
                      st.lists(st.sampled_from(["Paris is the capital of", "", 3]), max_size=4) | anything),
       threshold=mostly(st.none() | st.floats(0, 1), numbers), share=mostly(st.floats(0.01, 1), numbers))
def test_locate(gpt, prompts, threshold, share):
    out = outcome(lambda: kn.locate(gpt, prompts, " France", threshold=threshold, share=share, steps=2),
                  ("prompt", "threshold", "share"))
    assert out is None or all(0 <= l < gpt.n_layers and 0 <= i < gpt.width for l, i in out)


@PROFILE
@given(kind=st.sampled_from(["causal", "masked"]), data=st.data(), answer=answers, factor=mostly(st.floats(-3, 3),
                                                                                                 numbers))
def test_verify_scores_and_ranks(models, kind, data, answer, factor):
    lm = models[kind]
    prompts = data.draw(mostly(st.lists(st.sampled_from(PROMPTS[kind]), min_size=1, max_size=3)))
    neurons = data.draw(mostly(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 31)), max_size=4), neurons_of(lm)))
    method = data.draw(st.sampled_from([kn.Activation(), kn.IG(steps=2), None]))
    names = ("prompt", "answer", "neurons", "factor", "layer", "index", "pair", "[mask]")
    v = outcome(lambda: kn.verify(lm, prompts, answer, neurons, factor=factor), names)
    assert v is None or len(v.summary())
    p = prompts[0] if isinstance(prompts, list) and prompts else prompts
    s = outcome(lambda: (kn.scores(lm, p, answer, method), kn.activations(lm, p, answer), kn.answer_rank(lm, p, answer)),
                names)
    if s is not None:
        assert finite(s[0]) and finite(s[1]) and 0 <= s[2] < len(lm.tokenizer)


@PROFILE
@given(data=st.data(), max_size=mostly(st.integers(2, 8), ints), single=mostly(st.floats(0, 1), numbers),
       k=mostly(st.integers(1, 8), ints))
def test_degenerate_sets(gpt, data, max_size, single, k):
    cands = data.draw(mostly(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 47)), max_size=40) | st.none(),
                             neurons_of(gpt)))
    out = outcome(lambda: kn.degenerate_sets(gpt, "Paris is the capital of", " France", cands, max_size=max_size,
                                             single=single, k=k),
                  ("max_size", "single", "k", "candidates", "neuron sets"))
    assert out is None or all(2 <= len(s) for s in out)


IG_VALUES = {"steps": st.integers(1, 2000), "rule": st.sampled_from(list(kn.RULES)),
             "baseline": st.sampled_from(list(kn.BASELINES)), "multiplier": st.sampled_from(["x-b", "x"]),
             "freeze_norm": st.booleans(), "batch_size": st.none() | st.integers(1, 64),
             "screen": st.none() | st.integers(1, 64)}


@PROFILE
@given(name=st.sampled_from(list(IG_VALUES)), data=st.data())
def test_ig_settings(name, data):
    value = data.draw(mostly(IG_VALUES[name]))
    ig = outcome(lambda: kn.IG(**{name: value}), (name,))
    if ig is not None:
        assert kn.settings.from_dict(ig.to_dict()) == ig


SETTINGS = {"phases": st.sampled_from(["locate, verify", "locate,locate", "verify", "locate,degenerate,degeneracy",
                                        ["locate", "verify"], "locate"]),
            "languages": st.sampled_from(["en,en", "en, fr", ["en"], "en", "zh,en,"]), "seed": st.integers(-9, 9),
            "threshold": st.none() | st.floats(0, 1), "min_prompts": st.integers(0, 9), "steps": st.integers(1, 1100),
            "rule": st.sampled_from(list(kn.RULES)), "dkn_candidates": st.integers(1, 40),
            "dkn_max_size": st.integers(1, 12), "cross_suppress_factor": st.floats(-9, 9), "share": st.floats(0, 1),
            "suppress_factor": st.floats(-3, 3), "lambda1": st.floats(0, 10), "erase_k": st.integers(0, 9)}


@PROFILE
@given(name=st.sampled_from(list(SETTINGS)), data=st.data())
def test_run_settings(name, data):
    value = data.draw(mostly(SETTINGS[name]))
    from kn.runs import RunSettings

    kw = {name: value}
    if name.startswith("dkn_"):
        kw["phases"] = "locate,degenerate,degeneracy"
    if name.startswith("cross_"):
        kw |= {"phases": "locate,crosslingual", "languages": "en,fr"}
    s = outcome(lambda: RunSettings.make(**kw), (name, "phase", "setting"))
    if s is not None:
        assert RunSettings.from_dict(s.asdict()).asdict() == s.asdict()


@PROFILE
@given(sets=st.dictionaries(st.sampled_from(["en", "fr", "zh"]), st.dictionaries(
    st.sampled_from(["f1", "f2"]), st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9)), max_size=3), max_size=2),
    max_size=3), q=ints)
def test_likn(sets, q):
    from kn import likn

    out = outcome(lambda: (likn.likn_tables(sets, q=q), likn.by_layer(sets, 3, q=q), likn.overlap(sets)), ("q",))
    if out is not None:
        assert len(out[1]) == 3


@PROFILE
@given(l2=numbers, x=st.lists(numbers, min_size=2, max_size=6))
def test_logistic(l2, x):
    import numpy as np

    from kn.factcheck import Logistic

    X = np.array(x, dtype=float)[:, None]
    y = np.arange(len(x)) % 2 == 0

    def call():
        return Logistic(l2=l2).fit(X, y).proba(X)

    with np.errstate(all="ignore"):
        p = outcome(call, ("l2", "x "))
    assert p is None or (np.isfinite(p).all() and ((0 <= p) & (p <= 1)).all())


@PROFILE
@given(seconds=st.one_of(st.none(), numbers), extra=st.one_of(numbers, st.lists(numbers, max_size=3), texts))
def test_recording_never_holds_a_non_finite_number(tmp_path_factory, seconds, extra):
    import json

    import pandas as pd

    from kn import recording

    dest = tmp_path_factory.mktemp("rec")

    def call():
        prov = recording.provenance("kn x", seconds=seconds, extra=extra)
        t = pd.DataFrame({"x": [extra if isinstance(extra, (int, float)) else 0.0]})
        return recording.record(dest, {"t": t}, prov)

    out = outcome(call, ("seconds", "extra", "column"))
    if out is None:
        assert not any(dest.iterdir())  # refused: nothing written
    else:
        json.loads((dest / "provenance.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} written"))
        assert "inf" not in (dest / "t.csv").read_text().lower()


RUN_SETTINGS = {"phases": st.sampled_from(["locate", "locate, verify", "verify", "locate,,verify"]),
                "steps": st.integers(1, 3), "threshold": st.floats(0, 1), "min_prompts": st.integers(0, 4),
                "suppress_factor": st.floats(-2, 2), "seed": st.integers(-3, 3)}


@settings(PROFILE, max_examples=8)
@given(name=st.sampled_from(list(RUN_SETTINGS)), data=st.data())
def test_kn_run_writes_its_directory_only(gpt, tmp_path_factory, name, data):
    from test_run import tiny_facts

    from kn.data.schema import FactSet

    value = data.draw(mostly(RUN_SETTINGS[name]))
    root = tmp_path_factory.mktemp("runs")
    (root / "mine.txt").write_text("a user's file")
    out = root / "run"
    two = FactSet(list(tiny_facts())[:2], "two")
    kw = {"steps": 1, "phases": "locate", "progress": False} | {name: value}
    with only_writes(root, allowed=out):
        res = outcome(lambda: kn.run(gpt, two, out, **kw), (name, "phase"))
    assert res is None or len(res.facts) == 2


# -- CLI commands -----------------------------------------------------------------------------
def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@contextlib.contextmanager
def only_writes(root: Path, allowed: Path | None = None):
    """Fail if anything under `root` (outside `allowed`) is created, changed or removed inside the block."""
    before = snapshot(root)
    yield
    after = snapshot(root)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    if allowed is not None:
        changed = {p for p in changed if p != allowed and allowed not in p.parents}
    assert not changed, f"files changed that the command was not asked to write: {sorted(changed)}"


def cli(argv, root: Path, allowed: Path | None = None) -> tuple[int, str]:
    """kn's CLI in `root` as the working directory: (exit code, stderr); argparse's own refusal is exit 2."""
    from kn import cli as C

    err, cwd = io.StringIO(), os.getcwd()
    os.chdir(root)
    try:
        with only_writes(root, allowed), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                with no_hang():
                    code = C.main([str(a) for a in argv])
            except SystemExit as e:  # argparse: usage and the bad argument
                code = e.code
    finally:
        os.chdir(cwd)
    hypothesis.event(f"exit {code}")
    if code not in (0,):
        assert code == 2 and ("error" in err.getvalue()), err.getvalue()
    return code, err.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture()
def tiny_cli(gpt, monkeypatch):
    from kn import cli as C

    monkeypatch.setattr(C, "_load", lambda args: gpt)
    return C


@PROFILE
@given(prompt=mostly(st.sampled_from(PROMPTS["causal"]), texts), k=mostly(st.integers(1, 9), anything))
def test_cli_probe(tiny_cli, workdir, prompt, k):
    cli(["probe", prompt, "-k", k], workdir)


@PROFILE
@given(prompts=mostly(st.lists(st.sampled_from(PROMPTS["causal"]), min_size=1, max_size=3),
                      st.lists(texts, min_size=1, max_size=3)), answer=mostly(st.sampled_from([" France", "Paris"]), texts),
       steps=mostly(st.integers(1, 3), ints), threshold=mostly(st.floats(0, 1), numbers),
       share=mostly(st.floats(0.01, 1), numbers))
def test_cli_locate(tiny_cli, workdir, prompts, answer, steps, threshold, share):
    cli(["locate", *prompts, "--answer", answer, "--steps", steps, "--threshold", threshold, "--share", share,
         "--min-prompts", 1], workdir)


@PROFILE
@given(flag=st.sampled_from(["--phases", "--steps", "--threshold", "--languages", "--seed", "--workers",
                             "--dkn-candidates", "--cross-suppress-factor"]),
       value=mostly(st.sampled_from(["locate, verify", "3", "0.2", "en, fr", "1", "-1"]), st.one_of(texts, numbers)),
       engine=st.sampled_from(["local", "ray"]))
def test_cli_run_settings(tiny_cli, workdir, monkeypatch, flag, value, engine):
    seen = []
    monkeypatch.setattr(tiny_cli, "cmd_run", lambda args: seen.append((tiny_cli.run_settings(args),
                                                                       tiny_cli._engine(args))))
    code, err = cli(["run", flag, value, "--engine", engine, "--out", workdir / "run"], workdir)
    assert (code == 0) == bool(seen)


@PROFILE
@given(data=st.one_of(texts.map(lambda t: "pararel:" + t), texts.map(lambda t: "bmlama:" + t), texts),
       languages=st.one_of(st.none(), texts))
def test_cli_coverage(tiny_cli, workdir, data, languages):
    hypothesis.assume("://" not in data)  # no downloads
    code, err = cli(["coverage", "--data", data, "--no-probe", *(["--languages", languages] if languages else [])],
                    workdir)
    assert code == 2 or data == "builtin"


@PROFILE
@given(seconds=st.one_of(numbers, texts))
def test_cli_record(tiny_cli, workdir, seconds):
    dest = workdir / "dest"
    code, err = cli(["record", workdir / "no-run", dest, "--seconds", seconds], workdir, allowed=dest)
    assert code == 2 and not dest.exists()
