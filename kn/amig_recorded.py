"""Reads of the AMIG chapter's recordings (book/results/amig/<name>): each name's runs of the same facts
under several attribution methods, as facts tables `kn.quality.localization_quality` compares."""
from __future__ import annotations

from pathlib import Path

from . import recording
from .quality import method_label


def recorded_runs(root) -> tuple[dict, dict]:
    """The recordings under `root` (a path) as ({name: {method: facts table}}, {name: [Recording, ...]}):
    `root/NAME/METHOD/` each a recorded run (`kn record`; the method from its config), or, as the amig
    chapter recorded them before, `root/NAME/` with every method's facts in one table (a ``method``
    column). Where NAME has both, its METHOD recordings are the ones read."""
    runs: dict = {}
    found: dict = {}
    for prov in sorted(Path(root).glob("*/*/provenance.json")):
        rec = recording.read(prov.parent)
        method = method_label(rec.provenance["run_config"]["settings"]["attribution"])
        runs.setdefault(prov.parent.parent.name, {})[method] = rec["facts"]
        found.setdefault(prov.parent.parent.name, []).append(rec)
    for prov in sorted(Path(root).glob("*/provenance.json")):
        name = prov.parent.name
        if name not in runs:
            rec = recording.read(prov.parent)
            runs[name] = {m: g.drop(columns="method") for m, g in rec["facts"].groupby("method", sort=False)}
            found[name] = [rec]
    return dict(sorted(runs.items())), dict(sorted(found.items()))
