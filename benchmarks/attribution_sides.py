"""The attribution benchmark's sides (benchmarks/bench_attribution.py): the EleutherAI package's own
environment, and the worker processes, one per side (the package, kn fast, kn reference), each with
one model loaded, answering JSON lines on stdin/stdout with its seconds, CPU seconds and peak RSS
(so each side's memory is its own). The worker is bench_attribution.py run by the side's interpreter
(``--worker peer|kn``): this module level imports nothing but the standard library.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from attribution_models import BATCH, PEER_TYPE, load_checkpoint, peer_answer, plain_prob, quiet_transformers

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
ENTRY = BENCH_DIR / "bench_attribution.py"  # what a worker process runs
PEER_VENV = BENCH_DIR / ".peer-venv"

TORCH_PIN = "torch==2.13.0"  # CPU wheel from the local index; never let pip resolve another torch
PEER_REQS = ["transformers<5", "einops", "numpy", "tqdm"]  # what knowledge_neurons really imports
PEER_PKG = "knowledge-neurons==0.0.2"  # installed with --no-deps: its unpinned torch could pull CUDA
PEER_STAMP = "kn-bench-peer-ready"


def kn_tree() -> Path:
    """The kn checkout a kn worker imports: this repository, or $KN_BENCH_TREE (the other side of --ab)."""
    return Path(os.environ.get("KN_BENCH_TREE") or REPO)


def kn_lm(model, tok, name: str):
    if str(kn_tree()) not in sys.path:
        sys.path.insert(0, str(kn_tree()))
    import kn

    return kn.wrap(model, tok, name=name)



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
        cmd = [str(python), str(ENTRY), "--worker", side, "--ckpt", str(ckpt),
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

