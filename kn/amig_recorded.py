"""Reads of the AMIG chapter's recordings (book/results/amig/<name>): each name's runs of the same facts
under several attribution methods, as facts tables `kn.quality.localization_quality` compares."""
from __future__ import annotations

from pathlib import Path

from . import recording
from .quality import method_label


def recorded_runs(root) -> tuple[dict, dict]:
    """The recordings under `root` (a path), `root/NAME/METHOD/` each a recorded run (`kn record`; the
    method from its config), as ({name: {method: facts table}}, {name: [Recording, ...]})."""
    runs: dict = {}
    found: dict = {}
    for prov in sorted(Path(root).glob("*/*/provenance.json")):
        rec = recording.read(prov.parent)
        method = method_label(rec.provenance["run_config"]["settings"]["attribution"])
        runs.setdefault(prov.parent.parent.name, {})[method] = rec["facts"]
        found.setdefault(prov.parent.parent.name, []).append(rec)
    return dict(sorted(runs.items())), dict(sorted(found.items()))
