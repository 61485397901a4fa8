"""Each chapter's rerun note (kn.rerun): its parameters as executed and the command with others."""
import nbformat
import pytest
import yaml

from kn import rerun
from kn.checks import ArgumentError

CELL = '''model = "gemma-3-270m"
languages = ["en",
             "zh"]  # language codes
steps = 6
rule = "gauss_legendre"  # what kn.calibrate picked
# for this model
record = None
'''


def test_parameters_keep_order_values_and_comments():
    params = rerun.parameters(CELL)
    assert [p.name for p in params] == ["model", "languages", "steps", "rule", "record"]
    assert params[1].value == '["en",\n             "zh"]' and params[1].help == "language codes"
    assert params[3].help == "what kn.calibrate picked for this model" and params[4].help == ""
    with pytest.raises(ArgumentError, match="the parameters cell is not Python"):
        rerun.parameters("model = ")


def yaml_block(text: str) -> dict:
    return yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])


def test_the_note_shows_the_values_executed_and_the_commands():
    text = rerun.note("amig", rerun.parameters(CELL))
    assert yaml_block(text) == {"model": "gemma-3-270m", "languages": ["en", "zh"], "steps": 6,
                                "rule": "gauss_legendre", "record": None}
    assert "make chapter NAME=amig PARAMS='-f params.yaml'" in text
    assert "make chapter NAME=amig PARAMS='-p model smollm2-135m'" in text and "default parameters" in text
    rerun_with = rerun.note("amig", rerun.parameters(CELL), {"languages": ["fr"], "model": "smollm2-135m"})
    assert yaml_block(rerun_with)["languages"] == ["fr"] and yaml_block(rerun_with)["model"] == "smollm2-135m"
    assert "languages, model given to papermill" in rerun_with and "-p model gemma-3-270m" in rerun_with
    assert "PARAMS='-p steps 6'" in rerun.note("x", rerun.parameters("languages = ['en']\nsteps = 6\n"))
    assert yaml_block(rerun.note("x", rerun.parameters("out = str(1 + 2)\n"))) == {"out": "str(1 + 2)"}  # not a literal


def test_annotate_puts_the_note_after_the_parameters_once(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A chapter"),
        nbformat.v4.new_code_cell(CELL, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('languages = ["ru"]\n', metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(languages)"),
    ])
    nb.metadata["papermill"] = {"parameters": {"languages": ["ru"]}}
    path = tmp_path / "amig.ipynb"
    nbformat.write(nb, path)
    rerun.annotate(path)
    rerun.annotate(path)  # a second time replaces the note
    cells = nbformat.read(path, as_version=4).cells
    assert [c.cell_type for c in cells] == ["markdown", "code", "code", "markdown", "code"]
    assert "NAME=amig" in cells[3].source and yaml_block(cells[3].source)["languages"] == ["ru"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), tmp_path / "none.ipynb")
    with pytest.raises(ArgumentError, match="0 cells tagged `parameters`"):
        rerun.annotate(tmp_path / "none.ipynb")
