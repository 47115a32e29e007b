"""benchmarks/usl_table.py --published-only and the usl_sysu published table: the published figures the
unsupervised recipes target, each with the source it was read from, rewritten without retraining."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import usl_table  # noqa: E402

DOC = """# Results

<!-- BEGIN usl -->
## Unsupervised and semi-supervised training (synthetic data)

Run: 2026-12-07 09:11 UTC, revision 7f23460

| Training | labels used | rank-1 | mAP | mINP | train CPU s |
|---|---|---|---|---|---|
| unsupervised (usl_synth, no label) | 0 % | 6.11 ± 1.37 | 11.80 ± 0.61 | 7.95 ± 0.41 | 113 |

### What the real-data recipes target

| Method | SYSU-MM01 all-search | RegDB visible to thermal | Source |
|---|---|---|---|
| CEIL | not listed | not listed | its figures were not checked in this session |
<!-- END usl -->

<!-- BEGIN other -->
| stays |
<!-- END other -->
"""


def test_published_only_rewrites_just_the_published_figures(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(DOC)
    usl_table.rewrite_published(doc)
    text = doc.read_text()
    assert "| unsupervised (usl_synth, no label) | 0 % | 6.11 ± 1.37 |" in text and "revision 7f23460" in text
    assert "| stays |" in text and "were not checked in this session" not in text
    part = text.split("### What the real-data recipes target")[1].split("<!-- END usl -->")[0]
    rows = [line for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| Method")]
    assert [r.split(" (")[0].strip("| ") for r in rows] == ["PGM", "ADCA", "SDCL", "CEIL"]
    assert all(len([c for c in r.strip("|").split("|") if c.strip()]) == 4 for r in rows)  # every row names a source
    assert "| 56.29 / 51.36 |" in rows[0] and "sysu_s1_s2.log" in rows[0]
    assert "| not listed | not listed |" in rows[1] and "68.19 / 63.68" in rows[3] and "maybeextra/CEIL" in rows[3]
    usl_table.rewrite_published(doc)
    assert doc.read_text() == text  # idempotent
    doc.write_text("# Results\n")
    with pytest.raises(SystemExit, match="no 'usl' section"):
        usl_table.rewrite_published(doc)


def test_usl_sysu_states_pgms_released_figures_and_is_not_inherited():
    from vireid.config import load_config

    pub = load_config(REPO / "configs" / "usl_sysu.yaml").published
    assert (pub["rank1"], pub["mAP"], pub["mINP"], pub["protocol"]) == (56.29, 51.36, 35.06, "sysu-all-single")
    assert "zesenwu23/USL-VI-ReID" in pub["code"]
    for name in ("usl_regdb", "usl_llcm", "semi_sysu"):
        assert load_config(REPO / "configs" / f"{name}.yaml").published == {}
