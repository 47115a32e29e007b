"""What the paper ablation grids found, read from their finished runs: every ``compare`` pair of the
DFW+SLN, PDFENet, dual-path Swin (MAG/MMT) and CAJ grids (configs/ablations/), paired by training seed
with its 95 % Student's t interval (``vireid.workflows.ablation.compare_rows``), sorted into the pairs
whose interval excludes 0 (a finding) and the ones it does not (level with the reference). Writes the
"ablation-summary" section of docs/results.md; the grids' own sections hold the full tables.

Run the four grids first (the commands are in their sections of docs/results.md), then:

    python benchmarks/ablation_summary.py [--runs runs] [--protocol sysu-all-single]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS_DOC, run_precision, run_threads, write_section  # noqa: E402

SECTION = "ablation-summary"
TITLE = "The paper ablations in one place: what differs beyond the seed spread"
#: (grid file, run folder under --runs, the docs/results.md section holding its tables)
GRIDS = (
    ("dfw_sln_synth", "ablate-dfw_sln-e6", "DFW+SLN ablation"),
    ("pdfenet_synth", "ablate-pdfenet-e6", "PDFENet ablation"),
    ("mag_mmt_synth", "ablate-mag_mmt-e6", "Dual-path Swin ablation"),
    ("caj_synth", "ablate-caj-e6", "CAJ recipe"),
)


def _precision(run_dir: Path) -> str:
    """The precision and thread count a row's log.txt reports (``?`` when the log says nothing)."""
    return f"{run_precision(run_dir) or '?'}, {run_threads(run_dir) or '?'} thread(s) per row"


def _line(item: dict, titles: dict[str, str]) -> str:
    text = f"{titles[item['row']]} against {titles[item['against']]}: {item['diff']:+.2f} mAP"
    if item["seeds"] > 1:
        text += f" (± {item['sd']:.2f} over {item['seeds']} seeds, 95 % interval [{item['low']:+.2f}, {item['high']:+.2f}])"
    else:
        text += " (one seed)"
    return text


def summarise(runs: Path, protocol: str) -> str:
    from vireid.workflows.ablation import compare_rows, load_grid

    grids_dir = Path(__file__).resolve().parent.parent / "src" / "vireid" / "configs" / "ablations"
    parts, missing, precisions = [], [], set()
    for grid_name, folder, label in GRIDS:
        report_path = runs / folder / "ablation.json"
        if not report_path.is_file():
            missing.append(str(report_path))
            continue
        report = json.loads(report_path.read_text())
        grid = load_grid(grids_dir / f"{grid_name}.yaml")
        rows = report["rows"]
        titles = {row["name"]: row["label"] or row["name"] for row in rows}
        precisions |= {_precision(Path(row["run_dir"])) for row in rows if row.get("seeds")}
        seeds = sorted({len(row["seeds"]) for row in rows})
        items = [item for item in compare_rows(rows, grid.comparisons, protocol) if item["seeds"]]
        higher = [_line(i, titles) for i in items if i["reading"].startswith("higher")]
        lower = [_line(i, titles) for i in items if i["reading"].startswith("lower")]
        level = [_line(i, titles) for i in items if i["reading"].startswith(("level", "one seed"))]
        lines = [f"**{label}** (`{grid_name}`, {'/'.join(map(str, seeds))} seeds per row; table: the "
                 f"\"{label}\" section below):", ""]
        lines += [f"- higher: {text}" for text in higher] or ["- higher: none"]
        lines += [f"- lower: {text}" for text in lower] or ["- lower: none"]
        lines += [f"- level (the interval holds 0): {'; '.join(level) if level else 'none'}"]
        parts.append("\n".join(lines))
    if missing:
        raise SystemExit(f"ablation_summary: no finished grid at {', '.join(missing)}; run the grids first "
                         "(their commands are in docs/results.md) or pass --runs")
    head = (f"Every `compare` pair of the paper grids on {protocol}, mAP in percentage points, each row minus its "
            "reference, paired by training seed; the 95 % interval is Student's t over the seeds, and a pair is "
            "called higher or lower only when that interval excludes 0. Rows trained in: "
            f"{'; '.join(sorted(precisions))}.")
    return head + "\n\n" + "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="folder holding the grids' --out folders")
    ap.add_argument("--protocol", default="sysu-all-single")
    ap.add_argument("--doc", type=Path, default=RESULTS_DOC)
    args = ap.parse_args()
    body = summarise(args.runs, args.protocol)
    command = "python benchmarks/ablation_summary.py" + (f" --runs {args.runs}" if args.runs != Path("runs") else "")
    write_section(SECTION, TITLE, body, command, doc=args.doc)
    print(body)


if __name__ == "__main__":
    main()
