"""One self-contained HTML page about a run folder: ``vireid report RUN_DIR``.

Sections: summary (method, backbone, dataset, epochs, best epoch), test metrics per protocol with
and without k-reciprocal re-ranking (mean ± std over the gallery-draw trials, from
``test_results.json``), verification figures (the checkpoint's ``"verification"`` entry and any
non-protocol entries of ``test_results.json``), pictures (training curves, CMC curves, ROC curve
``roc.png`` when the verification step wrote one, ranked lists, Grad-CAM (attention rollout for transformers) heatmaps and a t-SNE
map), the config, the environment and the files of the folder.

The page is self-contained: pictures are embedded as base64 ``data:`` URIs and the only style is
an inline ``<style>`` block, so it can be mailed or archived as one file. Every text taken from the
run (config, names, numbers, file names) is HTML-escaped. The file is written atomically.

Missing pieces are named in a "Missing" box with the command that produces them, never silently
left out. This module only reads; the ``vireid report`` command evaluates first when
``test_results.json`` is absent (``--evaluate auto``, the default: the dataset's test protocols
with and without re-ranking, written into the run folder exactly as ``vireid eval --rerank`` does,
verification figures included), re-evaluates with ``--evaluate always``, and with
``--evaluate never`` leaves the gap listed as missing.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vireid.errors import VireidError

METRIC_COLUMNS = (("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("rank20", "Rank-20"),
                  ("mAP", "mAP"), ("mINP", "mINP"))

_STYLE = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
     color:#222;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0;font-size:0.92em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:10px;overflow-x:auto;font-size:0.85em}
figure{margin:16px 0}figcaption{color:#555;font-size:0.9em;margin-top:4px}
img{max-width:100%;height:auto;border:1px solid #eee}
.missing{background:#fff6e0;border:1px solid #f0c36d;padding:8px 14px;border-radius:4px}
.missing li{margin:3px 0}code{background:#f1f1f1;padding:0 3px}
nav a{margin-right:12px}.cards{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}
.cards h3{margin:8px 0 0}
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes included)."""
    return html.escape(str(value), quote=True)


@dataclass
class Figure:
    """An embedded picture: its anchor, title, PNG bytes and caption."""

    key: str
    title: str
    png: bytes
    caption: str = ""


@dataclass
class ReportData:
    """Everything the page shows, gathered from the run folder (and the model when pictures are drawn)."""

    run_dir: Path
    config_text: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=dict)  # light facts: epoch, classes, parameters, verification
    protocol_results: list[dict] = field(default_factory=list)
    other_results: list[Any] = field(default_factory=list)
    verification: Any = None  # verification.json of the run folder
    figures: list[Figure] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # HTML snippets (already escaped)
    environment: dict = field(default_factory=dict)
    files: list[tuple[str, int]] = field(default_factory=list)


# ------------------------------------------------------------------------------------ gathering
def environment_info() -> dict:
    """Versions and hardware of the machine that writes the report."""
    import numpy as np
    import torch

    import vireid

    info = {
        "vireid": vireid.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "CUDA available": str(torch.cuda.is_available()),
        "torch threads": str(torch.get_num_threads()),
        "CPU cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["CPU"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["GPU"] = torch.cuda.get_device_name(0)
        info["CUDA"] = str(torch.version.cuda)
    for module in ("timm", "sklearn", "matplotlib", "PIL"):
        try:
            info[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            continue
    return info


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_protocol_result(entry: Any) -> bool:
    return isinstance(entry, dict) and "name" in entry and isinstance(entry.get("mean"), dict) \
        and isinstance(entry.get("std"), dict)


def _checkpoint_facts(ckpt: dict) -> dict:
    facts: dict[str, Any] = {}
    state = ckpt.get("state") or {}
    if "epoch" in state:
        facts["epochs"] = state["epoch"]
    if state.get("best_epoch", -1) >= 0:
        facts["best epoch"] = state["best_epoch"]
    for key in ("num_classes", "embed_dim"):
        if key in ckpt:
            facts[key] = ckpt[key]
    model = ckpt.get("model")
    if isinstance(model, dict):
        facts["parameters"] = f"{sum(int(v.numel()) for v in model.values() if hasattr(v, 'numel')) / 1e6:.2f} M (incl. buffers)"
    if isinstance(ckpt.get("verification"), dict):
        facts["verification"] = ckpt["verification"]
    return facts


def _png_figure(key: str, title: str, draw: Callable[[io.BytesIO], Any], caption: str = "") -> Figure:
    buffer = io.BytesIO()
    draw(buffer)
    return Figure(key, title, buffer.getvalue(), caption)


def gather_report(run_dir: str | Path, *, pictures: bool = True, device: str = "auto", data_root: str | None = None,
                  num_queries: int = 6, num_ids: int = 10, cam_ids: int = 4, seed: int = 0,
                  progress: bool = False, choice: Any = None, results_dir: str | Path | None = None,
                  gan_run: str | Path | None = None) -> ReportData:
    """Collect the report's content (see the module docstring); the model is loaded only when
    pictures are drawn. Nothing is evaluated here: missing results are listed as missing.

    ``results_dir`` (default: the run folder) holds the ``test_results.json``, ``verification.json``
    and ``roc.png`` to show, e.g. the ``--out`` folder of ``vireid eval``; ``gan_run`` (a ``vireid gan train``
    folder) adds its translation grids (:mod:`vireid.viz.gan`); ``choice``
    (:class:`vireid.workflows.eval_data.DataChoice`) is the data the pictures are drawn on."""
    run_dir = Path(run_dir)
    results_dir = Path(results_dir) if results_dir is not None else run_dir
    if not run_dir.is_dir():
        raise VireidError(f"run folder {run_dir} does not exist; pass the folder written by `vireid train`")
    data = ReportData(run_dir=run_dir, environment=environment_info())
    data.files = sorted((p.name, p.stat().st_size) for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    has_ckpt = any((run_dir / n).is_file() for n in ("best.pt", "last.pt"))

    # config
    if (run_dir / "config.yaml").is_file():
        data.config_text = (run_dir / "config.yaml").read_text()
    summary = _read_json(run_dir / "train_summary.json")
    if isinstance(summary, dict):
        data.summary = summary
    else:
        data.missing.append(f"<code>train_summary.json</code> (written when <code>vireid train</code> finishes; "
                            f"continue an interrupted run with <code>vireid train --resume {esc(run_dir)}</code>)")

    # model + dataset, loaded once for all pictures
    results_path = results_dir / "test_results.json"
    run = None
    if has_ckpt and pictures:
        from vireid.viz.data import load_run

        run = load_run(run_dir, device=device, data_root=data_root, progress=progress, choice=choice)
        data.checkpoint = _checkpoint_facts(run.ckpt)
        data.config = run.cfg.to_dict()
    elif has_ckpt:
        from vireid.engine.checkpoint import load_checkpoint

        ckpt = load_checkpoint(run_dir)
        data.checkpoint = _checkpoint_facts(ckpt)
        data.config = dict(ckpt.get("config") or {})
    else:
        data.missing.append(f"a checkpoint (<code>best.pt</code> / <code>last.pt</code>): train with "
                            f"<code>vireid train --run-dir {esc(run_dir)}</code>; metrics and model pictures need it")
    if not data.config_text and data.config:
        import yaml

        data.config_text = yaml.safe_dump(data.config, sort_keys=False)

    # test results
    entries: Any = _read_json(results_path) if results_path.is_file() else None
    if entries is None:
        data.missing.append(f"<code>test_results.json</code>: evaluate with <code>vireid eval {esc(run_dir)} --rerank</code> "
                            f"(or run <code>vireid report {esc(run_dir)}</code> without <code>--evaluate never</code>)")
        entries = []
    if isinstance(entries, dict):  # tolerate {"results": [...], other keys...}
        data.other_results.extend({k: v} for k, v in entries.items() if k != "results")
        entries = entries.get("results", [])
    for entry in entries if isinstance(entries, list) else []:
        (data.protocol_results if _is_protocol_result(entry) else data.other_results).append(entry)
    if data.protocol_results and not any((r.get("settings") or {}).get("rerank") for r in data.protocol_results):
        data.missing.append(f"re-ranked results: <code>test_results.json</code> holds only plain ranking; add them with "
                            f"<code>vireid report {esc(run_dir)} --evaluate always</code> or "
                            f"<code>vireid eval {esc(run_dir)} --rerank</code>")

    if (results_dir / "verification.json").is_file():
        data.verification = _read_json(results_dir / "verification.json")

    # pictures
    from vireid.viz.curves import plot_training_curves

    if (run_dir / "metrics.jsonl").is_file():
        data.figures.append(_png_figure("curves", "Training curves", lambda b: plot_training_curves(run_dir, b),
                                        "Loss per step and epoch (with each weighted term), learning rate, and the "
                                        "validation mAP / rank-1 on held-out identities."))
    elif (run_dir / "curves.png").is_file():
        data.figures.append(Figure("curves", "Training curves", (run_dir / "curves.png").read_bytes()))
    else:
        data.missing.append("training curves: the run folder has no <code>metrics.jsonl</code>")
    if data.protocol_results:
        from vireid.viz.cmc import CMCCurve, plot_cmc

        curves = [CMCCurve(r["name"] + (" + re-rank" if (r.get("settings") or {}).get("rerank") else ""),
                           r.get("cmc") or [], r["mean"].get("mAP")) for r in data.protocol_results if r.get("cmc")]
        if curves:
            data.figures.append(_png_figure("cmc", "CMC curves", lambda b: plot_cmc(curves, b),
                                            "Mean CMC over the gallery-draw trials of each protocol."))
    if (results_dir / "roc.png").is_file():
        data.figures.append(Figure("roc", "ROC curve (verification)", (results_dir / "roc.png").read_bytes(),
                                   "Written by vireid eval (roc.png beside the test results)."))
    if pictures and run is not None:
        _model_pictures(data, run, num_queries=num_queries, num_ids=num_ids, cam_ids=cam_ids, seed=seed)
    elif not pictures:
        data.missing.append("ranked lists, heatmaps and t-SNE: left out (<code>--no-pictures</code>)")
    if gan_run is not None:  # translation grids of a GAN run (vireid.viz.gan)
        from vireid.viz.gan import gan_figures

        data.figures.extend(Figure(*fields) for fields in gan_figures(gan_run))
    return data


def _model_pictures(data: ReportData, run, *, num_queries: int, num_ids: int, cam_ids: int, seed: int) -> None:
    """Ranked lists, Grad-CAM and t-SNE of the loaded run; a picture that cannot be drawn is listed as missing."""
    from vireid.viz.cam import cams_for_run, resolve_method
    from vireid.viz.embedding import embedding_for_run
    from vireid.viz.ranking import ranked_lists_for_run

    _ = run.features  # the whole test pool once, shared by the ranked lists and the t-SNE map
    if resolve_method(run.model) == "rollout":  # transformers (vireid.viz.rollout)
        cam_title, cam_caption = "Attention rollout heatmaps", (
            "Visible and infrared image of random test identities; the map is the attention rollout from the class "
            "token to the patches over every transformer block (Abnar & Zuidema 2020).")
    else:
        cam_title, cam_caption = "Grad-CAM heatmaps", (
            "Visible and infrared image of random test identities; the map explains the cosine similarity of each "
            "image to the other modality's image of the same person (last backbone stage).")
    jobs = [
        ("ranked", "Ranked lists (infrared query → visible gallery)",
         lambda b: ranked_lists_for_run(run, b, num_queries=num_queries, seed=seed),
         f"{num_queries} random test queries (blue) and their top-10 gallery images by cosine similarity; green = "
         "same identity, red = another identity."),
        ("cam", cam_title, lambda b: cams_for_run(run, b, num_ids=cam_ids, seed=seed), cam_caption),
        ("tsne", "t-SNE of test embeddings", lambda b: embedding_for_run(run, b, num_ids=num_ids, seed=seed),
         "Colour = identity, circle = visible, triangle = infrared."),
    ]
    for key, title, draw, caption in jobs:
        try:
            data.figures.append(_png_figure(key, title, draw, caption))
        except VireidError as err:
            data.missing.append(f"{esc(title)}: {esc(err)}")


# ------------------------------------------------------------------------------------ rendering
#: Keys holding curves (long lists) that tables leave out; the pictures show them.
_CURVE_KEYS = {"roc", "cmc"}
_MAX_LIST = 12


def _fmt(value: Any) -> str:
    """Plain text of a value: floats to 6 significant digits, dicts inline, long lists shortened."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items() if k not in _CURVE_KEYS)
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_fmt(v) for v in value[:_MAX_LIST])
        return f"[{shown}{', …' if len(value) > _MAX_LIST else ''}]"
    return str(value)


def _kv_table(items: dict) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in items.items() if k not in _CURVE_KEYS)
    return f"<table>{rows}</table>"


def _metrics_table(results: list[dict]) -> str:
    """One row per protocol and re-ranking setting (plain first), mean ± std in percent."""
    ordered = sorted(results, key=lambda r: (r["name"], bool((r.get("settings") or {}).get("rerank"))))
    head = ["protocol", "re-rank", "draw", "trials"] + [label for _, label in METRIC_COLUMNS]
    lines = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for r in ordered:
        s = r.get("settings") or {}
        cells = [esc(r["name"]), "yes" if s.get("rerank") else "no", esc(s.get("draw", "-")), esc(len(r.get("trials") or []))]
        row = "".join(f"<td>{c}</td>" for c in cells)
        for key, _ in METRIC_COLUMNS:
            mean, std = r["mean"].get(key), r["std"].get(key)
            text = "-" if mean is None else f"{float(mean):.2f} ± {float(std or 0.0):.2f}"
            row += f'<td class="num">{esc(text)}</td>'
        lines.append(f"<tr>{row}</tr>")
    lines.append("</table>")
    return "".join(lines)


def _summary_facts(data: ReportData) -> dict:
    cfg = data.config or {}
    model = cfg.get("model") or {}
    params = model.get("params") or {}
    dataset = cfg.get("data") or {}
    facts: dict[str, Any] = {"run folder": str(data.run_dir.resolve())}
    if cfg.get("name"):
        facts["name"] = cfg["name"]
    if model.get("method"):
        facts["method"] = model["method"]
    if params.get("backbone"):
        facts["backbone"] = params["backbone"]
    if dataset:
        facts["dataset"] = f"{dataset.get('format')} at {dataset.get('root')} ({dataset.get('height')}x{dataset.get('width')})"
    if data.summary:
        for key in ("epochs", "best_epoch", "best_val_mAP"):
            if key in data.summary:
                value = data.summary[key]
                facts[key.replace("_", " ")] = f"{100 * value:.2f}" if key == "best_val_mAP" and value >= 0 else value
    for key, value in data.checkpoint.items():
        if key != "verification":
            facts.setdefault(key, value)
    eval_cfg = cfg.get("eval") or {}
    if eval_cfg:
        facts["evaluation"] = f"metric {eval_cfg.get('metric')}, gallery draw {eval_cfg.get('draw')}, {eval_cfg.get('trials')} trials"
    return facts


def render_report(data: ReportData) -> str:
    """The HTML page of :class:`ReportData` (all run-provided text escaped)."""
    name = (data.config or {}).get("name") or data.run_dir.name
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vireid report: {esc(name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>vireid run report: {esc(name)}</h1>",
        f'<p class="sub">{esc(data.run_dir.resolve())} · generated {esc(now)} by vireid {esc(data.environment.get("vireid", ""))}</p>',
        '<nav><a href="#summary">Summary</a><a href="#metrics">Metrics</a><a href="#verification">Verification</a>'
        '<a href="#pictures">Pictures</a><a href="#config">Config</a><a href="#environment">Environment</a>'
        '<a href="#files">Files</a></nav>',
    ]
    if data.missing:
        parts.append('<div class="missing"><strong>Missing from this report</strong><ul>'
                     + "".join(f"<li>{m}</li>" for m in data.missing) + "</ul></div>")
    parts.append('<h2 id="summary">Summary</h2>' + _kv_table(_summary_facts(data)))

    parts.append('<h2 id="metrics">Test metrics</h2>')
    if data.protocol_results:
        parts.append("<p>Percent, mean ± std over the gallery-draw trials of each protocol "
                     "(re-rank: k-reciprocal re-ranking, Zhong et al. 2017).</p>")
        parts.append(_metrics_table(data.protocol_results))
    else:
        parts.append("<p>No test results (see <em>Missing</em> above).</p>")

    parts.append('<h2 id="verification">Verification</h2>')
    verification = data.checkpoint.get("verification")
    if isinstance(data.verification, dict) and data.verification:
        parts.append("<p>From <code>verification.json</code> (cosine similarity of infrared x visible pairs; "
                     "calibration on held-out identities, then the test identities).</p>")
        cards = [f"<div><h3>{esc(key)}</h3>" + (_kv_table(value) if isinstance(value, dict) else f"<p>{esc(_fmt(value))}</p>")
                 + "</div>" for key, value in data.verification.items()]
        parts.append('<div class="cards">' + "".join(cards) + "</div>")
    elif verification:
        parts.append("<p>Calibrated threshold stored in the checkpoint:</p>" + _kv_table(verification))
    for entry in data.other_results:
        parts.append(_kv_table(entry) if isinstance(entry, dict) else f"<p>{esc(_fmt(entry))}</p>")
    if not verification and not data.other_results and not data.verification:
        parts.append("<p>No verification calibration (run <code>vireid calibrate RUN_DIR</code>).</p>")

    parts.append('<h2 id="pictures">Pictures</h2>')
    if not data.figures:
        parts.append("<p>No pictures (see <em>Missing</em> above).</p>")
    for fig in data.figures:
        uri = "data:image/png;base64," + base64.b64encode(fig.png).decode("ascii")
        parts.append(f'<figure id="{esc(fig.key)}"><h3>{esc(fig.title)}</h3><img src="{uri}" alt="{esc(fig.title)}">'
                     + (f"<figcaption>{esc(fig.caption)}</figcaption>" if fig.caption else "") + "</figure>")

    parts.append('<h2 id="config">Config</h2>')
    parts.append(f"<pre>{esc(data.config_text)}</pre>" if data.config_text else "<p>No config found.</p>")
    parts.append('<h2 id="environment">Environment</h2><p>Of the machine that wrote this report.</p>'
                 + _kv_table(data.environment))
    parts.append('<h2 id="files">Files</h2><table><tr><th>file</th><th>bytes</th></tr>'
                 + "".join(f'<tr><td>{esc(n)}</td><td class="num">{size:,}</td></tr>' for n, size in data.files)
                 + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_report(run_dir: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Gather (:func:`gather_report`, ``options`` passed on), render and atomically write the page;
    default ``RUN_DIR/report.html``. Returns its path."""
    from vireid.engine.checkpoint import atomic_write_text

    data = gather_report(run_dir, **options)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(path, render_report(data))
    return path
