"""benchmarks/bench_methods.py --append: new rows (e.g. the ViT / CLIP-ReID models, measured one at a time on a
shared machine) are merged into the cost table that is already in docs/benchmarks.md, with their settings and
the load at run time, leaving the other rows and the section header alone."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import bench_methods  # noqa: E402

HEADER = "| method | config | backbone | input | train batch | Params (M) | GFLOPs | train img/s | infer img/s |"
DOC = f"""# Benchmarks

<!-- BEGIN other -->
| a | `vit_synth` | stays |
<!-- END other -->

<!-- BEGIN bench_methods -->
## Method costs (params, FLOPs, images/s) on cpu

Command: `python benchmarks/bench_methods.py --device cpu agw_sysu`  
Run: 2026-11-22 05:39 UTC, revision 7410397

Each method ...

{HEADER}
|---|---|---|---|---|---|---|---|---|
| baseline | `agw_sysu` | resnet50 | 288x144 | 64 | 31.69 | 14.680 | 1.4 | 7.7 |
| vit | `vit_synth` | old | 64x32 | 64 | 0.1 | 0.1 | 1.0 | 1.0 |
<!-- END bench_methods -->
"""


def test_merge_rows_replaces_same_label_appends_new_and_keeps_the_rest():
    rows = ["| vit | `vit_synth` | new | 64x32 | 64 | 0.83 | 0.105 | 90.0 | 400.0 |",
            "| clip_reid | `clip_reid_sysu` | - | 256x128 | 64 | 150.0 | 20.0 | 0.5 | 2.0 |"]
    text = bench_methods.merge_rows(DOC, "bench_methods", rows, "Rows `vit_synth`, `clip_reid_sysu` added with load "
                                    "2.0 -> 2.1.")
    section = text.split("<!-- BEGIN bench_methods -->")[1]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[2:] == ["| baseline | `agw_sysu` | resnet50 | 288x144 | 64 | 31.69 | 14.680 | 1.4 | 7.7 |", *rows]
    assert "revision 7410397" in section and section.index("added with load") > section.index(rows[1])
    assert "| a | `vit_synth` | stays |" in text  # another section is not touched
    # a later --append of one of those rows: the first note says so, a note of only re-measured rows goes
    again = bench_methods.merge_rows(text, "bench_methods", [rows[1].replace("0.5", "0.6")], "Rows `clip_reid_sysu` "
                                     "added later.")
    section = again.split("<!-- BEGIN bench_methods -->")[1]
    assert "2.0 -> 2.1. Measured again later: `clip_reid_sysu`." in section
    assert "| 0.6 |" in section and "| 0.5 |" not in section
    third = bench_methods.merge_rows(again, "bench_methods", [rows[0], rows[1]], "Rows `vit_synth`, "
                                     "`clip_reid_sysu` added last.")
    section = third.split("<!-- BEGIN bench_methods -->")[1]
    assert "added later." not in section and "added with load" not in section
    assert section.count("Rows `") == 1 and "Rows `vit_synth`, `clip_reid_sysu` added last." in section
    with pytest.raises(SystemExit, match="no section 'bench_methods_cuda'"):
        bench_methods.merge_rows(DOC, "bench_methods_cuda", rows, "")


def test_append_measures_only_the_named_config_and_records_the_load(tmp_path, monkeypatch):
    import _report

    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    monkeypatch.setattr(_report, "DOC", doc)
    monkeypatch.setattr(sys, "argv", ["bench_methods.py", "--append", "--threads", "1", "--steps", "1", "--warmup",
                                      "0", "--infer-batch", "2", "--infer-repeats", "1", "--num-classes", "8",
                                      "vit_synth"])
    threads = __import__("torch").get_num_threads()
    try:
        bench_methods.main()
    finally:
        __import__("torch").set_num_threads(threads)
    text = doc.read_text()
    rows = [line for line in text.split("<!-- BEGIN bench_methods -->")[1].splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| baseline | `agw_sysu` |") and len(rows) == 3
    method, label, backbone, size, batch, params = [c.strip() for c in rows[2].strip("|").split("|")][:6]
    assert (method, label, backbone, size, batch) == ("vit", "`vit_synth`", "vit_tiny_patch16_224", "64x32", "64")
    assert 0.3 < float(params) < 2.0
    assert "Rows `vit_synth` added" in text and "--append --steps 1 --warmup 0" in text
    assert "1-minute load average before -> after each row: `vit_synth` " in text and "1 threads" in text
