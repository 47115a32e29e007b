"""``vireid report RUN_DIR``: one self-contained, escaped HTML page with metrics (± re-ranking),
verification, curves and pictures; missing results are evaluated (auto) or listed (never)."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from conftest import copy_run
from vireid.cli import app
from vireid.errors import VireidError

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tiny_trained_run) -> Path:
    """A 1-epoch run folder (checkpoints, metrics.jsonl, train_summary.json), not yet evaluated."""
    return tiny_trained_run


class PageParser(HTMLParser):
    """Collects tags, image sources, links and headings of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[tuple[str, str]] = []  # (src, alt)
        self.hrefs: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append((attrs.get("src", ""), attrs.get("alt", "")))
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if "id" in attrs:
            self.ids.append(attrs["id"])


def parse(html_text: str) -> PageParser:
    parser = PageParser()
    parser.feed(html_text)
    return parser


def embedded_sizes(page: PageParser) -> dict[str, tuple[int, int]]:
    sizes = {}
    for src, alt in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            sizes[alt] = img.size
    return sizes


def test_report_evaluates_missing_results_and_embeds_everything(tiny_run, tmp_path):
    from vireid.viz.cam import cam_grid_size
    from vireid.viz.cmc import DEFAULT_SIZE as CMC_SIZE
    from vireid.viz.curves import CURVES_SIZE
    from vireid.viz.embedding import DEFAULT_SIZE as TSNE_SIZE
    from vireid.viz.ranking import ranked_list_size

    run = copy_run(tiny_run, tmp_path / "run")
    Image.new("RGB", (120, 90), (10, 200, 30)).save(run / "roc.png")  # the evaluation's verification step may replace it
    (run / 'notes <script>alert("x")&.txt').write_text("x")
    result = runner.invoke(app, ["report", str(run), "--device", "cpu", "--num-queries", "3"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output

    results = json.loads((run / "test_results.json").read_text())  # evaluated, with and without re-ranking
    assert sorted((r["name"], bool(r["settings"]["rerank"])) for r in results) == [
        ("sysu-all-single", False), ("sysu-all-single", True), ("sysu-indoor-single", False), ("sysu-indoor-single", True)]
    report = run / "report.html"
    text = report.read_text()
    assert not [p for p in run.iterdir() if p.name.startswith(".report.html")]  # atomic write left nothing behind
    page = parse(text)

    # self-contained: no scripts, no external style sheets or images, links only to anchors
    assert "script" not in page.tags and "link" not in page.tags
    assert all(h.startswith("#") for h in page.hrefs) and set(h[1:] for h in page.hrefs) <= set(page.ids)
    assert "<script>" not in text and "notes &lt;script&gt;alert(&quot;x&quot;)&amp;.txt" in text

    # metrics: one row per protocol and re-ranking setting, mean ± std
    for r in results:
        mean, std = r["mean"]["mAP"], r["std"]["mAP"]
        assert f"{mean:.2f} ± {std:.2f}" in text
    assert text.count("<td>sysu-all-single</td>") == 2 and text.count("<td>sysu-indoor-single</td>") == 2

    sizes = embedded_sizes(page)
    with Image.open(run / "roc.png") as roc:
        roc_size = roc.size
    assert sizes == {
        "Training curves": CURVES_SIZE,
        "CMC curves": CMC_SIZE,
        "ROC curve (verification)": roc_size,
        "Ranked lists (infrared query → visible gallery)": ranked_list_size(3, 10),
        "Grad-CAM heatmaps": cam_grid_size(8, 8),
        "t-SNE of test embeddings": TSNE_SIZE,
    }
    for needle in ("baseline", "resnet10t", "torch", "Environment", "config.yaml", "train_summary.json"):
        assert needle in text, needle
    assert "Missing from this report" not in text


def test_report_without_evaluation_lists_what_is_missing(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "verification.json").write_text(json.dumps({"calibration": {"threshold": 0.5, "split": "<val>",
                                                                       "roc": {"far": [0.0] * 500, "tar": [1.0] * 500}}}))
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["report", str(run), "--evaluate", "never", "--no-pictures", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (run / "test_results.json").exists()
    text = out.read_text()
    assert "Missing from this report" in text
    assert f"vireid eval {run} --rerank" in text
    assert "--no-pictures" in text
    assert "&lt;val&gt;" in text and "<val>" not in text  # verification.json shown, escaped
    assert "0.5" in text and "far" not in text.split('id="verification"')[1].split("</table>")[0]  # curve left out
    sizes = embedded_sizes(parse(text))
    assert set(sizes) == {"Training curves"}


def test_report_errors_are_one_clear_sentence(tmp_path):
    from vireid.viz.report import build_report

    with pytest.raises(VireidError, match="does not exist"):
        build_report(tmp_path / "nothing")
    bad = runner.invoke(app, ["report", str(tmp_path), "--evaluate", "sometimes"])
    assert isinstance(bad.exception, VireidError) and "--evaluate" in str(bad.exception)
    empty = runner.invoke(app, ["report", str(tmp_path), "--no-pictures"])  # a folder with nothing: still a page
    assert empty.exit_code == 0, empty.output
    text = (tmp_path / "report.html").read_text()
    assert "a checkpoint" in text and "test_results.json" in text
