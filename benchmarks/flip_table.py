"""Test-time flip on a trained run: its test protocols with and without averaging each embedding
with its mirror image's (``eval.flip`` / ``vireid eval --flip``; the default of CAJ, DEEN and
fast-reid), and the inference time of each. Writes the "Test-time flip" section of
docs/benchmarks.md. The run folder is not written to (results go to a temporary ``--out``).

    python benchmarks/flip_table.py runs/demo
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="?", default=Path("runs/demo"), help="trained run folder (default runs/demo)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from vireid.workflows.train_run import evaluate_checkpoint
    from vireid.evaluation.protocols import format_results_table

    rows, seconds = [], {}
    for flip in (False, True):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            results = evaluate_checkpoint(args.run, out=Path(out), flip=flip, device=args.device, progress=False,
                                          quiet=True, verification=False)
            seconds[flip] = time.perf_counter() - t0
        for r in results:
            r.settings["method"] = f"{r.settings.get('method', args.run.name)} ({'flip' if flip else 'plain'})"
        rows += results
    from vireid.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.run)
    state, epochs = ckpt.get("state") or {}, (ckpt.get("config") or {}).get("train", {}).get("epochs")
    which = f"its best.pt is epoch {state.get('epoch', '?')} of {epochs}, chosen on the validation identities"
    plain = {r.name: r for r in rows if not r.settings.get("flip")}
    gains = [f"{r.name}: mAP {r.mean['mAP'] - plain[r.name].mean['mAP']:+.2f}, Rank-1 "
             f"{r.mean['rank1'] - plain[r.name].mean['rank1']:+.2f} points"
             for r in rows if r.settings.get("flip") and r.name in plain]
    body = (
        f"The trained run `{args.run.name}` (config `{ckpt['config'].get('name')}`; {which}) evaluated on its test "
        "protocols without and with test-time flip "
        "(each embedding averaged with its mirror image's; `vireid eval RUN --flip`, or `eval.flip: true` in "
        "the config; percent, mean ± std over the gallery-draw trials). Evaluation wall time (features of the "
        f"whole test pool, then the protocols): {seconds[False]:.1f} s plain, {seconds[True]:.1f} s with flip.\n\n"
        + format_results_table(rows) + "\n\nFlip minus plain: " + "; ".join(gains) + "."
    )
    write_section("flip_demo", "Test-time flip on the demo model", body, f"python benchmarks/flip_table.py {args.run}")
    print(body)


if __name__ == "__main__":
    main()
