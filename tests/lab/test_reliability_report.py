"""docs/reliability.md is what the committed result files render to, and a section
whose file is missing says how to produce it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lab.report.reliability import OUT, RESULTS, SECTIONS, render


def test_the_committed_page_is_what_the_committed_results_render_to() -> None:
    assert OUT.read_text() == render(), "run: python -m lab.report.reliability"


def test_every_section_renders_its_file_or_says_how_to_make_it(tmp_path: Path) -> None:
    for section in SECTIONS:
        if (RESULTS / section.results).exists():
            shutil.copy(RESULTS / section.results, tmp_path / section.results)
    present = render(tmp_path)
    for section in SECTIONS:
        assert f"## {section.title}" in present
    (tmp_path / SECTIONS[0].results).unlink(missing_ok=True)
    assert f"Not run yet: `{SECTIONS[0].produce}`" in render(tmp_path)


def test_the_replay_table_shows_the_move_before_the_fix_and_none_after() -> None:
    data = json.loads((RESULTS / "replay.json").read_text())
    moved = {
        label: {run["flow_moved_to_attacker"] for run in entry["runs"]}
        for label, entry in data["entries"].items()
    }
    assert moved == {"before-fix": {True}, "fixed": {False}}
