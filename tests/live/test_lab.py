"""The explorer live in a real JupyterLab, used by clicking in a real Chromium.

The `lab` fixture starts the server as `make lab` does (the Makefile's `lab-server` target: this
venv's kernel, `_jupyter/` on JUPYTER_CONFIG_PATH, jupytext) on a free port of 127.0.0.1 with a random
token, serving a copy of book/ (so nothing is saved into the repository), with the user's
Jupyter configuration, settings and runtime files kept out (temporary directories). It stops the server
(its whole process group) when the module ends, passed or failed, and checks that the port is closed
and the kernel's connection file is gone.

The `notebook` fixture opens book/explore.md in Chromium (Playwright, Debian's chromium, every
request that does not go to the local server aborted), where jupytext shows it as a notebook, and
runs all its cells from the Run menu: the chapter loads gemma-3-270m and steps the explorer from code
(8 IG steps, about 20 s). The tests then type into the widget and click its buttons, reading what the
widget shows (each widget has a CSS class kn-<name>, see kn.widgets).
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000
PROMPT, ANSWER = "The capital of Japan is", "Tokyo"
PARAPHRASES = ["The capital of Japan is", "The capital city of Japan is", "Japan's capital is called",
               "The seat of the Japanese government is in"]
UNFORMABLE = "<unk>"  # gemma's tokenizer writes it as its unknown token: an answer it cannot form


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Lab:
    url: str      # http://127.0.0.1:PORT
    token: str
    root: Path    # the directory served
    log: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not (BIN / "jupyter-lab").exists():
        what = f"JupyterLab not installed in {BIN} (it is in the book extra: pip install -e '.[book]')"
        pytest.fail(what) if os.environ.get("CI", "").lower() in {"1", "true", "yes"} else pytest.skip(what)
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "served"
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    shutil.copy(ROOT / "jupytext.toml", root)
    port, token, log = free_port(), secrets.token_hex(16), tmp / "server.log"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
    env.pop("JUPYTER_CONFIG_PATH", None)
    cmd = ["make", "--no-print-directory", "lab-server", f"BIN={BIN}", f"LAB_PORT={port}", f"LAB_TOKEN={token}",
           f"LAB_ROOT={root}", "LAB_OPTS=--no-browser --ServerApp.port_retries=0"]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not responds(f"{url}/api/status?token={token}"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start ({' '.join(cmd)}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Lab(url, token, root, log)
    finally:
        started = time.monotonic()
        os.killpg(server.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        print(f"lab: server stopped in {time.monotonic() - started:.1f} s")
    assert not responds(f"{url}/api/status?token={token}"), "the server still answers after it was stopped"
    kernels = list((tmp / "runtime").glob("kernel-*.json"))
    assert not kernels, f"kernels left running: {kernels}"


@pytest.fixture(scope="module")
def notebook(lab, chromium):
    """The chapter open in JupyterLab, all its cells run; yields (page, remote requests seen)."""
    from playwright.sync_api import sync_playwright

    remote: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.route(lambda u: not u.startswith(lab.url), lambda route: (remote.append(route.request.url),
                                                                            route.abort()))
            started = time.monotonic()
            page.goto(f"{lab.url}/lab/tree/book/explore.md?token={lab.token}")
            page.locator(".jp-NotebookPanel .jp-CodeCell").first.wait_for()
            page.wait_for_function("() => document.body.textContent.includes('Python 3 (ipykernel) | Idle')")
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            page.wait_for_function("""() => {  // every cell ran, or one failed (Run All stops there)
                const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
                const failed = [...document.querySelectorAll('.jp-OutputArea')].some(
                    (o) => o.textContent.includes('Traceback'));
                return failed || (prompts.length > 0 && prompts.every((p) => /\\[\\d+\\]/.test(p.textContent)));
            }""", timeout=300_000)
            print(f"lab: chapter opened and run in {time.monotonic() - started:.1f} s")
            yield page, remote
        finally:
            page.screenshot(path=str(lab.log.parent / "lab.png"), full_page=True)
            browser.close()


def status(page) -> str:
    return page.locator(".kn-status").inner_text()


def set_value(page, name: str, value) -> None:
    """Types into the widget `kn-<name>` and leaves the field (number fields sync on change)."""
    field = page.locator(f".kn-{name} input, .kn-{name} textarea").first
    field.fill(str(value))
    field.evaluate("(e) => e.blur()")


def click(page, name: str, done: str) -> str:
    """Clicks the button `kn-<name>`; waits until the status line, once it changed (each step first
    says it is working), says `done` or an error; returns it."""
    page.locator(".kn-status").evaluate("""(el) => {
        window.knStatus = [];
        new MutationObserver(() => window.knStatus.push(el.textContent))
            .observe(el, {subtree: true, childList: true, characterData: true});
    }""")
    page.locator(f"button.kn-{name}").click()
    page.wait_for_function("""(done) => { const s = window.knStatus;
        return s.length > 0 && (s[s.length - 1].includes(done) || s[s.length - 1].includes('error:')); }""", arg=done)
    page.locator("button.kn-probe:not([disabled])").wait_for()
    return status(page)


def read_table(page) -> list[dict]:
    return page.locator(".kn-table table").evaluate("""(t) => {
        const head = [...t.querySelectorAll('thead th')].map((h) => h.textContent.trim());
        return [...t.querySelectorAll('tbody tr')].map((r) =>
            Object.fromEntries([...r.querySelectorAll('td')].map((d, i) => [head[i], d.textContent.trim()])));
    }""")


def test_the_chapter_runs_in_lab_and_shows_the_explorer(notebook):
    page, remote = notebook
    outputs = page.locator(".jp-NotebookPanel .jp-OutputArea").all_inner_texts()
    assert not any("Traceback" in o or "Error" in o for o in outputs), "\n".join(outputs)[-3000:]
    assert any("suppress" in o and "mean P(Paris)" in o for o in outputs), "the chapter's finding was not printed"
    assert page.locator(".kn-explorer").is_visible()
    assert "neuron(s)" in page.locator(".kn-neurons").inner_text()  # the chapter's own steps, drawn
    assert not remote, f"requests that would leave the machine: {remote}"


def test_probe_attribute_locate_suppress_by_clicking(notebook):
    page, remote = notebook
    set_value(page, "prompt", PROMPT)
    set_value(page, "answer", ANSWER)
    said = click(page, "probe", "probed")
    assert "error" not in said, said
    topk = page.locator(".kn-topk").inner_text()
    assert PROMPT in topk and f"P({ANSWER}) =" in topk, topk
    assert page.locator(".kn-topk tbody tr").count() == 10  # the chapter's top k
    assert ANSWER in page.locator(".kn-topk tbody").inner_text()  # gemma knows this one

    heatmap = page.locator("img.kn-heatmap")
    before = heatmap.get_attribute("src")
    said = click(page, "attribute", "attributed")
    assert f"attributed '{ANSWER}'" in said, said
    page.wait_for_function("(b) => { const i = document.querySelector('img.kn-heatmap');"
                           " return i.src !== b && i.complete && i.naturalWidth > 200; }", arg=before)

    set_value(page, "paraphrases", "\n".join(PARAPHRASES))
    set_value(page, "steps", 6)
    page.locator("button.kn-locate").click()  # 4 paraphrases x 6 steps: a few seconds, with progress
    page.locator(".kn-progress").wait_for(state="visible")
    page.wait_for_function("() => /^2\\/4: /.test(document.querySelector('.kn-progress-label').textContent)")
    assert page.locator("button.kn-probe").is_disabled()  # busy: the buttons wait
    page.locator(".kn-progress").wait_for(state="hidden")
    said = status(page)
    assert "located" in said and "error" not in said, said
    neurons = page.locator(".kn-neurons").inner_text()
    n = int(re.match(r"(\d+) knowledge neuron", neurons).group(1))
    pairs = re.findall(r"\((\d+), (\d+)\)", neurons)
    assert n > 0 and len(pairs) == n, neurons

    page.locator(".kn-intervention button", has_text="suppress").click()
    page.wait_for_function("() => document.querySelector('.kn-table').textContent.includes('set to 0')")
    rows = read_table(page)
    assert [r["prompt"] for r in rows] == PARAPHRASES
    before_p = [float(r["P before"]) for r in rows]
    after_p = [float(r["P after"]) for r in rows]
    assert sum(after_p) < sum(before_p), rows
    caption = page.locator(".kn-table").inner_text()
    assert f"{n} neuron(s) set to 0" in caption and re.search(r"relative change of the mean: -\d", caption), caption
    page.locator(".kn-intervention button", has_text="none").click()
    assert not remote, f"requests that would leave the machine: {remote}"


@pytest.mark.parametrize("name, value, button, said", [
    ("prompt", "", "probe", "type a prompt"),
    ("k", 0, "probe", "top k is 0: the explorer lists 1 to 100 answers"),
    ("steps", 10**6, "attribute", "IG steps is 1000000: the explorer takes 1 to 200"),
    ("answer", UNFORMABLE, "attribute", "cannot represent the answer"),
])
def test_bad_input_is_said_and_the_widget_stays_usable(notebook, name, value, button, said):
    page, _ = notebook
    set_value(page, "prompt", PROMPT)
    set_value(page, "answer", ANSWER)
    set_value(page, "k", 5)
    set_value(page, "steps", 4)
    set_value(page, name, value)
    shown = click(page, button, "never")
    assert said in shown and "error:" in shown, shown
    color = page.locator(".kn-status span").evaluate("(s) => getComputedStyle(s).color")
    assert color == "rgb(198, 40, 40)", color  # kn.widgets.ERROR_COLOR
    field = page.locator(f".kn-{name} input").first
    assert field.input_value() == str(value), "the value was changed (clamped?)"
    set_value(page, name, {"prompt": PROMPT, "k": 5, "steps": 4, "answer": ANSWER}[name])
    shown = click(page, "probe", "probed")
    assert "error" not in shown and page.locator(".kn-topk tbody tr").count() == 5, shown
