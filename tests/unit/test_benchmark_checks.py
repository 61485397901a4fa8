"""The attribution benchmark's correctness checks on tiny models (benchmarks/bench_attribution.py).

No timing here, ever: speed targets live in the benchmark, not in tests. kn fast vs reference
always runs; kn vs the EleutherAI package runs only when the benchmark's peer environment exists
(benchmarks/.peer-venv, made by `python benchmarks/bench_attribution.py --setup-peer`).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "bench_attribution.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_attribution", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_attribution", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("family", ["bert", "gpt2", "gemma"])
def test_fast_path_equals_reference_on_tiny_models(bench, family):
    errs = bench.check_fast_vs_reference(family, tiny=True, n_prompts=3)
    assert len(errs) == 3
    assert max(errs) <= bench.REL_TOL_REF_TINY, errs


@pytest.mark.parametrize("family", ["bert", "gpt2", "gemma"])
def test_offline_tokenizer_makes_every_answer_one_token(bench, family):
    tok = bench.hf_tokenizer(family, vocab_size=bench.model_config(family, tiny=True).vocab_size)
    for prompt, answer in bench.prompts(family):
        text = answer if family == "bert" else " " + answer
        assert len(tok(text, add_special_tokens=False)["input_ids"]) == 1
        ids = tok(prompt)["input_ids"]
        assert tok.unk_token_id not in ids or family == "gpt2"  # GPT-2's unk is <|endoftext|>, never made
        if family == "bert":
            assert ids.count(tok.mask_token_id) == 1
        if family == "gemma":
            assert ids[0] == tok.bos_token_id


def test_real_size_configs_are_the_published_ones(bench):
    bert = bench.model_config("bert", tiny=False)
    assert (bert.vocab_size, bert.hidden_size, bert.num_hidden_layers, bert.intermediate_size) == (28996, 768, 12, 3072)
    gpt2 = bench.model_config("gpt2", tiny=False)
    assert (gpt2.vocab_size, gpt2.n_embd, gpt2.n_layer) == (50257, 768, 12)
    gemma = bench.model_config("gemma", tiny=False)
    assert (gemma.vocab_size, gemma.hidden_size, gemma.intermediate_size, gemma.num_hidden_layers) == (
        262144, 640, 2048, 18)
    assert gemma.layer_types == (["sliding_attention"] * 5 + ["full_attention"]) * 3
    assert gemma.tie_word_embeddings


def test_saved_checkpoint_reloads_to_the_same_model(bench, tmp_path):
    model, tok = bench.build_model("gpt2", tiny=True)
    bench.save_checkpoint("gpt2", True, tmp_path / "ck")
    family, again, tok2 = bench.load_checkpoint(tmp_path / "ck")
    assert family == "gpt2"
    prompt, answer = bench.prompts("gpt2")[0]
    assert bench.plain_prob(model, tok, family, prompt, answer) == bench.plain_prob(again, tok2, family, prompt, answer)
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


def test_rel_err(bench):
    b = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert bench.rel_err(b, b) == 0.0
    assert bench.rel_err(b + torch.tensor([[0.0, 0.0], [0.02, 0.0]]), b) == pytest.approx(0.01)
    assert bench.rel_err(torch.zeros(2), torch.zeros(2)) == 0.0


def test_kn_matches_the_package_on_tiny_bert(bench, tmp_path):
    if not bench.peer_ready():
        pytest.skip(f"peer environment {bench.PEER_VENV} missing: "
                    "python benchmarks/bench_attribution.py --setup-peer")
    ckpt = bench.save_checkpoint("bert", True, tmp_path / "bert")
    peer = bench.Worker("peer", bench.peer_python(), ckpt, 2, tmp_path, side="peer")
    try:
        local = bench.Side("kn", ckpt)
        for i, (prompt, answer) in enumerate(bench.prompts("bert", 3)):
            a = peer.ask(op="prob", prompt=prompt, answer=answer)
            b = local.ask(op="prob", prompt=prompt, answer=answer)
            assert (a["ids"], a["gold"]) == (b["ids"], b["gold"])
            peer.ask(op="score", prompt=prompt, answer=answer, steps=20, batch_size=20, out=str(tmp_path / f"p{i}.pt"))
            local.ask(op="score", prompt=prompt, answer=answer, steps=20, batch_size=20, out=str(tmp_path / f"k{i}.pt"))
            ps, ks = torch.load(tmp_path / f"p{i}.pt"), torch.load(tmp_path / f"k{i}.pt")
            assert ps.shape == ks.shape
            assert ps.abs().max() > 0
            assert bench.rel_err(ks, ps) <= bench.REL_TOL_PEER
        peer.close()
    finally:
        peer.kill()


def test_convergence_study_on_a_tiny_model():
    """kn.convergence's per-fact record: errors shrink with steps where the rule converges,
    the paper's own setting agrees with itself, and the exact integral's cross-check is tight."""
    from kn import convergence as conv

    from kn.testing import tiny_lm

    torch.set_num_threads(1)
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    queries = [("Paris is the capital of", " France"), ("the capital of France is", " Paris")]
    rec = conv.fact_record(lm, "f", queries, ["riemann_left", "gauss_legendre"], [2, 8, 32], 64, check=True)
    assert rec["cross_check"] < 1e-3
    err = {(r["rule"], r["steps"], r["prompt"]): r["error"] for r in rec["errors"]}
    for p in (0, 1):
        assert err[("gauss_legendre", 32, p)] < 1e-4 and err[("riemann_left", 32, p)] < err[("riemann_left", 2, p)]
    paper = [r for r in rec["errors"] if (r["rule"], r["steps"]) == conv.PAPER]
    assert len(paper) == 2 and all(r["coarse_vs_paper"] == 1.0 for r in paper)
    sets = {(s["rule"], s["steps"]): s for s in rec["sets"]}
    assert sets[conv.PAPER]["refined_vs_paper"] == 1.0 and sets[("gauss_legendre", 32)]["refined_vs_exact"] == 1.0


def test_fast_setting_benchmark_checks_on_a_tiny_model(bench, capsys):
    """benchmarks/bench_fast.py end to end on tiny GPT-2 (no timing asserted): errors against the
    exact integral are computed and the fast setting's is far below the paper setting's."""
    spec = importlib.util.spec_from_file_location("bench_fast", REPO / "benchmarks" / "bench_fast.py")
    fast = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fast)
    assert fast.main(["--check-only", "--tiny", "--models", "gpt2", "--prompts", "2", "--no-peer", "--fast", "gauss_legendre:8",
                      "--out", ""]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| tiny GPT-2 | —"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    paper_err, fast_err = (float(cells[i].split()[0]) for i in (4, 6))
    assert fast_err < paper_err / 10, row  # Gauss-Legendre 8 vs the 20-step left sum
    assert "kn fast setting within 1e-2 of the exact integral" in out and "FAIL" not in out
    with pytest.raises(SystemExit, match="RULE:STEPS"):
        fast.parse_setting("simpson:8")


def test_flop_count_includes_the_in_place_products_the_profiler_misses():
    """The output layer's walk over the vocabulary does 2 * V * d * B FLOPs in logits (mm) and as many
    in its in-place accumulation (addmm_), which torch.profiler counts as 0: the benchmark adds them."""
    from torch.profiler import ProfilerActivity, profile

    from kn.ig.head import softmax_sums

    spec = importlib.util.spec_from_file_location("bench_fast", REPO / "benchmarks" / "bench_fast.py")
    fast = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fast)
    B, d, V = 3, 16, 5000  # 3 vocabulary chunks of at most 2048
    h, W = torch.randn(B, d), torch.randn(V, d)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
        softmax_sums(h, W, None, chunk=2048)
    events = prof.key_averages()
    assert sum(e.flops for e in events if e.key == "aten::mm") == 2 * V * d * B  # the logits
    assert sum(e.flops or 0 for e in events if e.key == "aten::addmm_") == 0  # what the profiler misses
    assert fast.uncounted_flops(prof.key_averages(group_by_input_shape=True)) == 2 * V * d * B
    assert "aten::addmm_" in fast.MATMUL


def test_convergence_recommendation_is_the_cheapest_setting_no_worse_than_the_papers():
    import pandas as pd

    from kn import convergence as conv

    # (rule, steps) -> (error, refined-set agreement), the same on two models but for one planted flaw
    table = {("riemann_left", 20): (1e-3, 0.8), ("riemann_left", 4): (1e-2, 0.5), ("gauss_legendre", 2): (5e-3, 0.9),
             ("gauss_legendre", 4): (1e-5, 0.95), ("linspace", 4): (1e-6, 0.99), ("gauss_legendre", 8): (1e-7, 1.0)}
    errors, sets = [], []
    for model in ("a", "b"):
        for (rule, steps), (e, j) in table.items():
            if model == "b" and (rule, steps) == ("linspace", 4):
                j = 0.7  # agrees worse than the paper's on one model: not eligible
            errors += [{"model": model, "rule": rule, "steps": steps, "error": e * f} for f in (0.5, 1, 2)]
            sets.append({"model": model, "rule": rule, "steps": steps, "refined_vs_exact": j})
    rec = conv.recommend(pd.DataFrame(errors), pd.DataFrame(sets)).iloc[0]
    assert (rec["rule"], rec["steps"]) == ("gauss_legendre", 4)
    assert rec["error a"] == 1e-5 and rec["paper error b"] == 1e-3 and rec["agreement b"] == 0.95


def test_calibration_transfer_on_planted_tables():
    """Model a: Gauss-Legendre 4 beats the paper's setting on every prompt, 2 points on some facts only;
    model b: nothing cheaper holds, so the paper's setting is kept. Checked split by split."""
    import pandas as pd

    from kn import convergence as conv

    errors, sets = [], []
    for model in ("a", "b"):
        for f in range(8):
            good2 = model == "a" and f < 4  # 2 points are good enough on half of a's facts
            table = {("riemann_left", 20): 1e-2, ("gauss_legendre", 2): 1e-3 if good2 else 5e-2,
                     ("gauss_legendre", 4): 1e-4 if model == "a" else 2e-2}
            for (rule, steps), e in table.items():
                errors += [{"model": model, "fact_id": f"f{f}", "prompt": j, "rule": rule, "steps": steps,
                            "error": e * (1 + j)} for j in range(2)]
                sets.append({"model": model, "fact_id": f"f{f}", "rule": rule, "steps": steps,
                             "refined_vs_exact": 1.0 if e < 1e-2 else 0.5 if e > 1e-2 else 0.9})
    moved = conv.transfer(pd.DataFrame(errors), pd.DataFrame(sets), k=3, splits=20)
    assert len(moved) == 40 and set(moved.calibration_facts) == {3}
    a, b = moved[moved.model == "a"], moved[moved.model == "b"]
    assert set(a.steps) <= {2, 4} and 4 in set(a.steps)  # 2 points only when every calibration fact allows it
    assert (b.rule == "riemann_left").all() and (b.steps == 20).all() and b.no_worse.all()
    four = a[a.steps == 4]
    assert four.no_worse.all() and (four.prompts_no_worse == 1.0).all()
    two = a[a.steps == 2]  # chosen on good facts only: worse than the paper's on the held-out bad ones
    assert (two.prompts_no_worse < 1.0).all()


def test_transfer_summary_and_choices_per_model():
    """The chapter's view of a `transfer` table, on splits built here: counts, means, medians, shares."""
    import pandas as pd

    from kn import convergence as conv

    moved = pd.DataFrame({"model": ["a", "a", "a", "b"], "split": [0, 1, 2, 0], "rule": ["gauss_legendre"] * 3 + ["riemann_left"],
                          "steps": [2, 4, 4, 20], "held_error": [1.0, 2.0, 9.0, 5.0], "paper_held_error": [3.0] * 4,
                          "held_agreement": [1.0, 0.5, 0.0, 1.0], "paper_held_agreement": [0.9] * 4,
                          "prompts_no_worse": [1.0, 0.5, 0.0, 1.0], "no_worse": [True, False, False, True]})
    s = conv.transfer_summary(moved)
    assert list(s.index) == ["a", "b"] and list(s.splits) == [3, 1]
    a = s.loc["a"]
    assert a.points == pytest.approx(10 / 3) and a.held_error == 2.0 and a.held_agreement == 0.5
    assert a.prompts_no_worse == 0.5 and a.no_worse == pytest.approx(1 / 3) and s.loc["b", "no_worse"] == 1.0
    c = conv.transfer_choices(moved)
    assert list(zip(c.model, c.setting, c.splits)) == [("a", "gauss_legendre 2", 1), ("a", "gauss_legendre 4", 2),
                                                      ("b", "riemann_left 20", 1)]


def test_speed_benchmark_keeps_every_part_and_touches_the_readme_only_when_all_ran(tmp_path, monkeypatch):
    """benchmarks/bench_speed.py with stand-in parts: a part that fails leaves the others' tables in the
    results file and the README as it was; when every part runs, the README's section is replaced."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_speed", REPO / "benchmarks" / "bench_speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("print('loading...')\nprint('Fixed fast setting (without calibration): x, 2 steps')\nprint('| model | 3.0x |')\n")
    bad.write_text("import sys\nprint('half a table')\nsys.exit('it broke')\n")
    monkeypatch.setattr(speed, "commands", lambda args, fast: {"fast": [str(good)], "run": [str(bad)]})
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{speed.BEGIN}\nold table\n{speed.END}\nrest\n")
    out = tmp_path / "speed.md"
    args = ["--fast", "gauss_legendre:4", "--out", str(out), "--readme", str(readme)]
    assert speed.main(args + ["--parts", "fast,run"]) == 1
    text = out.read_text()
    assert "| model | 3.0x |" in text and "loading" not in text and "half a table" in text
    assert "**Failed** (exit 1)" in text and "it broke" in text
    assert "old table" in readme.read_text()
    assert speed.main(args + ["--parts", "fast"]) == 0
    r = readme.read_text()
    assert "old table" not in r and "| model | 3.0x |" in r and r.startswith("intro\n") and r.endswith("rest\n")


def test_kn_convergence_command_end_to_end(tmp_path, capsys):
    """`kn convergence` on a saved tiny model: the study's tables, the recommendation and a recording
    with the command as given; run again it resumes (no fact twice), run with other steps it makes its
    facts again; a folder with a user's file is refused untouched."""
    from kn import cli, recording
    from kn.testing import tiny_lm

    torch.set_num_threads(1)
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    argv = ["convergence", "--models", str(tmp_path / "m"), "--out", str(tmp_path / "study"), "--facts", "2",
            "--prompts", "1", "--steps", "2,8", "--exact", "16", "--cross-facts", "1"]
    assert cli.main(argv + ["--record", str(tmp_path / "rec")]) == 0
    rec = recording.read(tmp_path / "rec")
    assert set(rec.tables) == {"errors", "sets", "recommended", "transfer", "exact_checks"}
    assert rec.provenance["command"] == "kn " + " ".join(argv + ["--record", str(tmp_path / "rec")])
    assert rec["errors"].fact_id.nunique() == 2 and set(rec["errors"].steps) == {2, 8, 20}
    lines = (tmp_path / "study" / "journal.jsonl").read_text().splitlines()
    assert cli.main(argv) == 0 and (tmp_path / "study" / "journal.jsonl").read_text().splitlines() == lines
    # other steps into the same study: its facts are made again with them, never read from the old records
    other = argv[:argv.index("--steps") + 1] + ["2,4"] + argv[argv.index("--steps") + 2:]
    assert cli.main(other + ["--record", str(tmp_path / "rec4")]) == 0
    again = recording.read(tmp_path / "rec4")["errors"]
    assert set(again.steps) == {2, 4, 20} and again.fact_id.nunique() == 2
    assert len((tmp_path / "study" / "journal.jsonl").read_text().splitlines()) == len(lines) + 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert cli.main(argv[:3] + ["--out", str(mine)] + argv[5:]) == 2
    assert "notes.txt" in capsys.readouterr().err and [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_bench_run_measures_a_screened_setting_beside_the_paper_one(tmp_path, one_thread):
    """benchmarks/bench_run.py's `measure` on a tiny model (no timing asserted): a row per setting, and the
    Jaccard of a setting's knowledge neurons with the first's, 1 for the same setting again."""
    import kn
    from kn.testing import tiny_lm
    from test_run import tiny_facts

    spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "bench_run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    settings = {"paper": kn.IG(steps=3), "again": kn.IG(steps=3), "screen 1": kn.IG(steps=3, screen=1)}
    rows, jac = mod.measure(lm, tiny_facts()[:3], settings, tmp_path)
    assert [r["setting"] for r in rows] == list(settings) and all(r["facts"] == 3 for r in rows)
    assert jac["again"] == 1.0 and 0.0 <= jac["screen 1"] <= 1.0
    runs = [kn.load_run(tmp_path / str(i)) for i in range(3)]
    for r, res in zip(rows, runs):
        assert r["with_kns"] == res.neurons.fact_id.nunique()
    assert rows[0]["with_kns"] > 0  # else the Jaccard shows nothing
    assert runs[2].settings.attribution.screen == 1 and runs[0].settings.attribution.screen is None


@pytest.mark.parametrize("bf16", [False, True])
def test_throughput_benchmark_counts_flops_that_grow_with_the_path_on_a_tiny_model(monkeypatch, bf16):
    """bench_throughput's profile child on a tiny model: more path points, more FLOPs per prompt (IG's
    products grow with the steps); the sampled shares of the time add up to one; the ceiling rate is positive;
    with --bf16, the bfloat16 model (asked for by dtype) gets its own rate and sampled profile too."""
    import types

    import torch

    import kn
    import kn.data
    from kn.testing import tiny_lm

    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_throughput as bt

    loaded = []

    def load(*a, dtype=torch.float32, **k):
        lm = tiny_lm("Llama")
        lm.model.to(dtype)
        loaded.append(dtype)
        return lm

    monkeypatch.setattr(kn, "load", load)
    facts = list(kn.data.load("builtin"))[:1]
    monkeypatch.setattr(bt, "known_facts", lambda lm, data, rel, n: (facts[:n], 0.0, 1))
    args = types.SimpleNamespace(threads=1, model="tiny", data="builtin", relations=["capital"], facts=1, bf16=bf16)
    out = bt.profile(args, {"2": kn.IG(steps=2), "8": kn.IG(steps=8)})
    assert out["flops"]["8"] > 1.2 * out["flops"]["2"] > 0 and out["rate_gflops"] > 0
    assert sum(out["profile"].values()) == pytest.approx(1) and out["profile_wall"] > 0 and out["profile_facts"] == 1
    assert loaded == [torch.float32] + [torch.bfloat16] * bf16
    if bf16:
        assert out["rate_gflops_bf16"] > 0 and out["profile_wall_bf16"] > 0
        assert sum(out["profile_bf16"].values()) == pytest.approx(1)
    else:
        assert "profile_bf16" not in out


def test_every_function_the_sampler_files_by_exists_in_kn():
    """Each (kn file, function) a sampling category names is defined there: a renamed function would drop its
    time into "other" unseen (probing's `_prefix_cache` became `prefix_cache`, and verify's prefix pass left
    the profile)."""
    import ast

    sys.path.insert(0, str(REPO / "benchmarks"))
    from sampling import CATEGORIES

    named = [(frag, fn) for _, marks in CATEGORIES for frag, fn in marks if frag.startswith("kn/") and fn != "*"]
    assert len(named) >= 8
    for frag, fn in named:
        tree = ast.parse((REPO / frag).read_text())
        assert fn in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, (frag, fn)


def test_sampled_time_is_filed_by_what_kn_is_doing():
    """sampling.category on hand-made stacks (innermost first): a walk inside the screen is a walk, the
    screen's backward is the screen's, IG's backward alone is IG's; Sampler's shares sum to one."""
    import time

    sys.path.insert(0, str(REPO / "benchmarks"))
    from sampling import OTHER, Sampler, category

    engine = [("/x/kn/runs/engine.py", "_work"), ("/x/kn/runs/phases/locate.py", "run_fact")]
    walk = [("/x/kn/ig/head.py", "softmax_sums"), ("/x/kn/ig/head.py", "cotangents"), ("/x/kn/ig/walks.py", "flush")]
    back = [("/x/torch/autograd/graph.py", "_engine_run_backward"), ("/x/kn/ig/head.py", "backward"),
            ("/x/kn/ig/walks.py", "flush")]
    screen = [("/x/kn/gradxact.py", "_targets")]
    assert category(walk + screen + engine) == "output-layer walks (vocabulary)"
    assert category(back + screen + engine) == "screen: forward and backward"
    assert category(back + [("/x/kn/ig/fast.py", "attribute_targets")] + engine) == "IG path: backward"
    assert category([("/x/kn/probing.py", "_last_token_probs")] + engine) == "verify: last-token passes"
    assert category(engine) == OTHER
    with Sampler(interval=0.001) as s:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.1:
            pass
    assert s.seconds >= 0.1 and sum(s.shares().values()) == pytest.approx(1) and OTHER in s.shares()


def test_throughput_child_returns_each_facts_kn_set_for_the_bf16_comparison(monkeypatch, tmp_path, one_thread):
    """bench_throughput's child on a tiny model: the KN set per fact equals the neurons of the same run made
    with `kn.runs.run` and read back with `kn.load_run`; jaccard on hand-made sets."""
    import json
    import types

    import kn
    from kn.runs import run
    from kn.testing import tiny_lm
    from test_run import tiny_facts

    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_throughput as bt

    lm = tiny_lm("GPT-2", initializer_range=0.2)
    monkeypatch.setattr(kn, "load", lambda *a, **k: lm)
    import kn.data.select as select

    facts = tiny_facts()[:3]

    def known(lm, data, rel, n):  # as select_facts does: the pool counted (timed apart), then the facts
        select.language_counts(kn.data.load("builtin"), lm, ["en"])
        return facts[:n], 0.0, 3

    monkeypatch.setattr(bt, "known_facts", known)
    counting = select.language_counts
    args = types.SimpleNamespace(threads=1, model="tiny", data="builtin", relations=["capital"], facts=3,
                                 dtype="float32", child=json.dumps(kn.IG(steps=3).to_dict()))
    out = bt.child(args)
    run(lm, facts, tmp_path / "again", progress=False, phases=("locate", "verify"), attribution=kn.IG(steps=3))
    n = kn.load_run(tmp_path / "again").neurons
    want = {f: sorted([int(l), int(i)] for l, i in zip(g.layer, g["index"])) for f, g in n.groupby("fact_id")}
    assert out["facts"] == 3 and want and out["sets"] == want
    assert out["pool_seconds"] > 0 and select.language_counts is counting  # timed, then put back
    assert bt.jaccard([[0, 1]], [[0, 1], [1, 2]]) == 0.5 and bt.jaccard([], []) == 1.0 and bt.jaccard([[0, 1]], []) == 0.0


def test_throughput_main_with_bf16_spawns_both_bfloat16_heads_and_prints_each_against_float32(monkeypatch, capsys):
    """bench_throughput's parent with --bf16, its children replaced by canned answers: the bfloat16 rows run
    with bfloat16 weights, one with IG's float32 head and one with its bfloat16 head; each row's rate and
    Jaccard against the float32 sets are printed from those answers."""
    import json
    import subprocess

    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_throughput as bt

    spawned = []
    sets = {"float32": {"f1": [[0, 1], [2, 3]], "f2": [[1, 1]]}, "bfloat16": {"f1": [[0, 1]], "f2": [[1, 1]]}}

    def fake(cmd, **kw):
        spawned.append(cmd)
        if "--profile-child" in cmd:
            out = {"rate_gflops": 100.0, "rate_gflops_bf16": 250.0, "profile_facts": 2,
                   "flops": {"paper (riemann_left, 20)": 3e11, "fast (gauss_legendre, 2)": 4e10},
                   "profile": {"a": 1.0}, "profile_wall": 5.0, "profile_bf16": {"a": 1.0}, "profile_wall_bf16": 4.0}
        else:
            dtype = cmd[cmd.index("--dtype") + 1] if "--dtype" in cmd else "float32"
            head = json.loads(cmd[cmd.index("--child") + 1]).get("head_dtype", "float32")
            secs = {"float32": 20.0, "bfloat16": 10.0}[dtype] / (2 if head == "bfloat16" else 1)
            out = {"facts": 2, "prompts": 10, "with_kns": 2, "sets": sets[dtype], "filter_seconds": 1.0,
                   "pool_seconds": 0.5, "probed": 4, "run_seconds": secs, "peak_mb": 100.0}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(out) + "\n", stderr="")

    monkeypatch.setattr(subprocess, "run", fake)
    bt.main(["--fast", "gauss_legendre:2", "--bf16", "--facts", "2"])
    children = [json.loads(c[c.index("--child") + 1]) for c in spawned if "--child" in c]
    dtypes = [c[c.index("--dtype") + 1] if "--dtype" in c else "float32" for c in spawned if "--child" in c]
    assert [c.get("head_dtype", "float32") for c in children] == ["float32", "float32", "float32", "bfloat16"]
    assert dtypes == ["float32", "float32", "bfloat16", "bfloat16"]
    out = capsys.readouterr().out
    assert "| fast (gauss_legendre, 2), bfloat16 weights and head | 2 (4) | 1 (0.5) | 5 | 3.0 | 1200 | 1309 |" in out
    assert "bfloat16 weights and head / float32 (fast): x3.50" in out  # 2 facts in 21 s against 6 s
    assert out.count("Jaccard per fact: median 1.00, min 0.50 over 2 facts") == 2
