"""`vireid ablate`: grid file checks, resumable row states, tables and the docs section, and a real
two-row grid trained for one epoch each on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_overrides
from vireid.config import save_config
from vireid.workflows.ablation import load_grid, run_ablation, write_markdown_section
from vireid.errors import ConfigError, VireidError

CONFIG = REPO / "configs" / "dfw_sln_synth.yaml"


def write_grid(path: Path, rows: list[dict], **extra) -> Path:
    path.write_text(yaml.safe_dump({"rows": rows, **extra}, sort_keys=False))
    return path


TWO_ROWS = [
    {"name": "base", "label": "Baseline", "marks": {"DFW": False, "SLN": False},
     "overrides": ["model.params.dfw_after_stages=[]", "model.params.num_branches=1"]},
    {"name": "full", "marks": {"DFW": True, "SLN": True}, "overrides": {"model.params.num_branches": 2}},
]


def test_grid_file_format_and_errors(tmp_path):
    grid = load_grid(write_grid(tmp_path / "g.yaml", TWO_ROWS, config="dfw_sln_synth", overrides=["train.epochs=1"]))
    assert [r.name for r in grid.rows] == ["base", "full"] and grid.config == "dfw_sln_synth"
    assert grid.rows[1].overrides == ["model.params.num_branches=2"]  # mapping form -> key=value
    assert grid.overrides == ["train.epochs=1"] and grid.mark_columns() == ["DFW", "SLN"]
    shipped = load_grid(REPO / "src" / "vireid" / "configs" / "ablations" / "dfw_sln_synth.yaml")
    assert len(shipped.rows) == 12 and shipped.mark_columns() == ["DFW", "SLN", "RE", "L_op", "DFW reading", "centre"]
    bad_grids = [
        {"rows": []},
        {"rows": [{"name": "a"}, {"name": "a"}]},
        {"rows": [{"name": "a/b"}]},
        {"rows": [{"name": "a", "overrides": ["no-equals-sign"]}]},
        {"rows": [{"name": "a", "colour": 1}]},
        {"rows": [{"name": "a"}], "extra": 1},
    ]
    for index, data in enumerate(bad_grids):
        path = tmp_path / f"bad{index}.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError):
            load_grid(path)
    # a bad override in any row is reported before anything trains
    grid = load_grid(write_grid(tmp_path / "typo.yaml", [{"name": "a"}, {"name": "b", "overrides": ["model.params.num_branchez=2"]}]))
    with pytest.raises(ConfigError, match="row 'b'"):
        run_ablation(CONFIG, grid, tmp_path / "out", train_fn=_fail, evaluate_fn=_fail)


def _fail(*args, **kwargs):
    raise AssertionError("nothing should run")


class FakeRuns:
    """Stand-ins for training/evaluation that leave the files a real run leaves, and record calls."""

    def __init__(self):
        self.calls: list[tuple[str, str, bool]] = []

    def train(self, cfg, folder, resume=False, evaluate=True):
        self.calls.append(("train", folder.name, resume))
        folder.mkdir(parents=True, exist_ok=True)
        save_config(cfg, folder / "config.yaml")
        (folder / "last.pt").write_bytes(b"x")
        (folder / "train_summary.json").write_text(json.dumps({"epochs": cfg.train.epochs}))
        self.evaluate(folder, record=False)

    def evaluate(self, folder, progress=False, record=True):
        if record:
            self.calls.append(("evaluate", folder.name, False))
        rank1 = 10.0 * (len(self.calls) + 1)
        mean = {"rank1": rank1, "rank5": 1.0, "rank10": 2.0, "rank20": 3.0, "mAP": 4.0, "mINP": 5.0}
        rows = [
            {"name": "sysu-all-single", "settings": {"rerank": False}, "trials": [{}, {}], "mean": mean, "std": mean},
            {"name": "sysu-all-single", "settings": {"rerank": True}, "trials": [{}, {}], "mean": mean, "std": mean},
        ]
        (folder / "test_results.json").write_text(json.dumps(rows))


def test_rows_are_resumable_and_edits_are_refused(tmp_path, tiny_synth_root):
    grid = load_grid(write_grid(tmp_path / "g.yaml", TWO_ROWS))
    out = tmp_path / "out"
    common = tiny_overrides(tiny_synth_root, tmp_path, **{"train.epochs": 1})
    fake = FakeRuns()
    lines: list[str] = []
    report = run_ablation(CONFIG, grid, out, common, command="vireid ablate ...", train_fn=fake.train,
                          evaluate_fn=fake.evaluate, log=lines.append)
    assert fake.calls == [("train", "base", False), ("train", "full", False)]
    assert lines[0].startswith("[1/2] base: training") and lines[1].startswith("[2/2] full: training")
    assert [r["results"]["sysu-all-single"]["mean"]["rank1"] for r in report.rows] == [20.0, 30.0]
    # again: nothing runs
    fake.calls.clear()
    run_ablation(CONFIG, grid, out, common, train_fn=fake.train, evaluate_fn=fake.evaluate, log=lines.append)
    assert fake.calls == [] and "done" in lines[-1]
    # trained but not evaluated -> evaluate only; interrupted (last.pt, no summary) -> resume
    (out / "base" / "test_results.json").unlink()
    (out / "full" / "test_results.json").unlink()
    (out / "full" / "train_summary.json").unlink()
    run_ablation(CONFIG, grid, out, common, train_fn=fake.train, evaluate_fn=fake.evaluate, log=lines.append)
    assert fake.calls == [("evaluate", "base", False), ("train", "full", True)]
    # runtime-only keys may change; a changed recipe may not
    run_ablation(CONFIG, grid, out, [*common, "train.progress=true", "train.threads=1"], train_fn=_fail, evaluate_fn=_fail,
                 log=lines.append)
    with pytest.raises(VireidError, match="different config"):
        run_ablation(CONFIG, grid, out, [*common, "optim.lr=0.5"], train_fn=_fail, evaluate_fn=_fail, log=lines.append)
    # a run saved by an older vireid, before a config key existed, still matches (the key's default fills in)
    saved = out / "base" / "config.yaml"
    tree = yaml.safe_load(saved.read_text())
    del tree["plugins"], tree["optim"]["backbone_lr_mult"]
    saved.write_text(yaml.safe_dump(tree))
    run_ablation(CONFIG, grid, out, common, train_fn=_fail, evaluate_fn=_fail, log=lines.append)
    # tables: marks as ✓/✗, the mean of the run without re-ranking, commands per row
    md = (out / "ablation.md").read_text()
    assert "| row | DFW | SLN | Rank-1 | Rank-10 | Rank-20 | mAP | mINP |" in md
    assert "| Baseline | ✗ | ✗ |" in md and "| full | ✓ | ✓ |" in md
    assert "vireid train --config" in md and "model.params.num_branches=1" in md
    data = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["base", "full"] and data["rows"][0]["results"]
    # --row runs only that row, dry runs nothing
    with pytest.raises(ConfigError):
        run_ablation(CONFIG, grid, out, common, only=["nope"], train_fn=_fail, evaluate_fn=_fail)
    fake.calls.clear()
    run_ablation(CONFIG, grid, out, common, dry_run=True, train_fn=_fail, evaluate_fn=_fail, log=lines.append)
    assert fake.calls == [] and lines[-1].startswith("[2/2] full: done")


def test_markdown_section_is_written_then_replaced(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nintro\n\n<!-- BEGIN other -->\nkeep\n<!-- END other -->\n")
    write_markdown_section(doc, "abl", "Ablation", "table one")
    write_markdown_section(doc, "abl", "Ablation", "table two")
    text = doc.read_text()
    assert text.count("<!-- BEGIN abl -->") == 1 and "table two" in text and "table one" not in text
    assert "intro" in text and "keep" in text
    with pytest.raises(ConfigError):
        write_markdown_section(doc, "bad name", "x", "y")


def test_two_row_grid_end_to_end_through_the_cli(tiny_synth_root, tmp_path):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers the sub-commands)
    from vireid.cli import app

    grid = write_grid(tmp_path / "grid.yaml", TWO_ROWS, config=str(CONFIG), title="Tiny ablation")
    out = tmp_path / "abl"
    doc = tmp_path / "results.md"
    extra = {"train.epochs": 1, "sampler.epoch_length": 2, "train.threads": 1, "train.eval_every": 0,
             "eval.protocols": "[sysu-all-single]"}
    args = ["ablate", "--grid", str(grid), "--out", str(out), "--append-to", str(doc), "--section", "tiny",
            *tiny_overrides(tiny_synth_root, tmp_path, **extra)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[1/2] base: training" in result.output and "[2/2] full: training" in result.output
    for name in ("base", "full"):
        rows = json.loads((out / name / "test_results.json").read_text())
        assert rows[0]["name"] == "sysu-all-single" and 0.0 < rows[0]["mean"]["mAP"] <= 100.0
    data = json.loads((out / "ablation.json").read_text())
    means = [r["results"]["sysu-all-single"]["mean"] for r in data["rows"]]
    table = (out / "ablation.md").read_text()
    for row, mean in zip(("Baseline", "full"), means):
        line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
        assert f"| {mean['rank1']:.2f} |" in line and line.endswith(f"| {mean['mINP']:.2f} |")
    section = doc.read_text()
    assert "<!-- BEGIN tiny -->" in section and "## Tiny ablation" in section and "vireid ablate" in section
    # a second call finds both rows done and trains nothing
    mtime = (out / "full" / "last.pt").stat().st_mtime_ns
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[2/2] full: done" in result.output and (out / "full" / "last.pt").stat().st_mtime_ns == mtime
    assert doc.read_text().count("<!-- BEGIN tiny -->") == 1


def test_jobs_train_rows_in_parallel_processes_and_a_failed_row_does_not_stop_the_others(tiny_synth_root, tmp_path):
    """``--jobs 2``: each row runs as its own ``vireid train`` process with its log beside its folder;
    the results equal what the rows' own commands make, a row that fails at run time is reported by
    name with its log while the others finish, and the rerun trains only the failed row."""
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app

    rows = [*TWO_ROWS, {"name": "broken", "overrides": ["data.format=sysu-mm01", f"data.root={tmp_path / 'absent'}"]}]
    grid = write_grid(tmp_path / "grid.yaml", rows, config=str(CONFIG))
    out = tmp_path / "abl"
    extra = {"train.epochs": 1, "sampler.epoch_length": 2, "train.eval_every": 0, "eval.protocols": "[sysu-all-single]",
             "train.threads": None}
    args = ["ablate", "--grid", str(grid), "--out", str(out), "--jobs", "2",
            *[o for o in tiny_overrides(tiny_synth_root, tmp_path, **extra) if o != "train.threads=None"]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    message = str(result.exception)
    assert "1 ablation row(s) failed: broken (exit" in message and str(out / "broken.log") in message
    assert "in a process of its own" in result.output and "FAILED" in result.output
    assert (out / "base.log").is_file() and (out / "full.log").is_file()
    assert "does not exist" in (out / "broken.log").read_text()
    data = json.loads((out / "ablation.json").read_text())  # the finished rows are tabulated
    assert [bool(r["results"]) for r in data["rows"]] == [True, True, False]
    saved = yaml.safe_load((out / "base" / "config.yaml").read_text())
    assert saved["train"]["threads"] >= 1 and saved["train"]["progress"] is False  # cores // jobs, no bars in logs
    mtime = (out / "full" / "last.pt").stat().st_mtime_ns
    rows[2]["overrides"] = []  # fixed: the rerun trains only that row
    write_grid(tmp_path / "grid.yaml", rows, config=str(CONFIG))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[1/3] base: done" in result.output and "[3/3] broken: training in a process of its own" in result.output
    assert (out / "full" / "last.pt").stat().st_mtime_ns == mtime
    assert all(r["results"] for r in json.loads((out / "ablation.json").read_text())["rows"])


def test_seeds_train_each_row_per_seed_and_tabulate_mean_and_spread(tmp_path, tiny_synth_root):
    """``seeds``: the config's own seed keeps ``OUT/<row>`` (runs made without seeds are reused), other
    seeds get ``OUT/<row>.seed<S>`` with ``seed=S``; cells are the mean over seeds ± their sample std."""
    grid = load_grid(write_grid(tmp_path / "g.yaml", TWO_ROWS))
    out = tmp_path / "out"
    common = tiny_overrides(tiny_synth_root, tmp_path, **{"train.epochs": 1})
    fake = FakeRuns()
    run_ablation(CONFIG, grid, out, common, train_fn=fake.train, evaluate_fn=fake.evaluate, log=lambda _: None)
    fake.calls.clear()
    seen_seeds = []
    original = fake.train

    def train(cfg, folder, resume=False, evaluate=True):
        seen_seeds.append((folder.name, cfg.seed, cfg.name))
        original(cfg, folder, resume, evaluate)

    lines: list[str] = []
    report = run_ablation(CONFIG, grid, out, common, seeds=[0, 1, 2], train_fn=train, evaluate_fn=fake.evaluate,
                          log=lines.append)
    assert seen_seeds == [("base.seed1", 1, "base.seed1"), ("base.seed2", 2, "base.seed2"),
                          ("full.seed1", 1, "full.seed1"), ("full.seed2", 2, "full.seed2")]
    assert lines[0] == f"[1/6] base: done, results read from {out / 'base' / 'test_results.json'}"
    # FakeRuns' rank-1 is 10 x (calls + 1): base 20 (seed 0, earlier run), then 20, 30 -> mean 23.33, std 5.77
    base = report.rows[0]["results"]["sysu-all-single"]
    assert base["seeds"] == 3 and base["mean"]["rank1"] == pytest.approx(70 / 3)
    assert base["seed_std"]["rank1"] == pytest.approx(5.7735, abs=1e-3) and base["seed_std"]["mAP"] == 0.0
    assert sorted(report.rows[0]["seeds"]) == ["0", "1", "2"]
    md = (out / "ablation.md").read_text()
    assert "then mean ± std over 3 training seeds" in md and "| Baseline | ✗ | ✗ | 23.33 ± 5.77 |" in md
    assert "seed=1" not in report.rows[0]["train_command"]  # the row's command is its config-seed run


def test_seeds_option_of_the_cli(tmp_path, tiny_synth_root):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app

    grid = write_grid(tmp_path / "grid.yaml", TWO_ROWS, config=str(CONFIG))
    base = ["ablate", "--grid", str(grid), "--out", str(tmp_path / "abl"), "--dry-run",
            *tiny_overrides(tiny_synth_root, tmp_path)]
    result = CliRunner().invoke(app, [*base, "--seeds", "0,3"])
    assert result.exit_code == 0, result.output
    assert "[2/4] base.seed3: new" in result.output and "[4/4] full.seed3: new" in result.output
    result = CliRunner().invoke(app, [*base, "--seeds", "0,x"])
    assert result.exit_code != 0 and "is not a comma-separated list of integers" in str(result.exception)


@pytest.mark.parametrize("grid_path", sorted((REPO / "src" / "vireid" / "configs" / "ablations").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_grid_row_is_a_valid_config(grid_path, tmp_path):
    """Each row of each shipped grid validates against its config (a dry run checks them all first)."""
    from vireid.workflows.ablation.command import resolve_grid_config

    grid = load_grid(grid_path)
    lines: list[str] = []
    report = run_ablation(resolve_grid_config(grid.config, grid_path), grid, tmp_path / "out", dry_run=True,
                          train_fn=_fail, evaluate_fn=_fail, log=lines.append)
    assert len(lines) == len(grid.rows) == len(report.rows) and all(": new ->" in line for line in lines)


def _seeded_row(name: str, maps: dict[int, float]) -> dict:
    """A report row whose runs under each seed scored ``maps[seed]`` mAP on sysu-all-single."""
    from vireid.workflows.ablation import METRIC_COLUMNS, combine_seeds

    seeds = {str(s): {"sysu-all-single": {"mean": {key: v for key, _ in METRIC_COLUMNS}, "std": {}, "trials": 10}}
             for s, v in maps.items()}
    return {"name": name, "label": "", "marks": {}, "train_command": "vireid train",
            "results": combine_seeds(list(seeds.values())), "seeds": seeds}


def test_compare_pairs_by_seed_with_a_students_t_interval(tmp_path):
    """``compare`` pairs are read out per seed: mean ± sd of the differences and the 95 % t interval; the
    reading says higher/lower only when the interval excludes 0, and one seed is no conclusion."""
    from vireid.workflows.ablation import AblationReport, compare_rows

    rows = [_seeded_row("base", {0: 10.0, 1: 12.0, 2: 11.0}),
            _seeded_row("up", {0: 12.0, 1: 15.0, 2: 15.0}),      # differences 2, 3, 4
            _seeded_row("noisy", {0: 14.0, 1: 9.0, 2: 13.0}),    # differences 4, -3, 2
            _seeded_row("one", {0: 30.0}),
            _seeded_row("none", {})]
    grid = load_grid(write_grid(tmp_path / "g.yaml", [{"name": r["name"]} for r in rows],
                                compare=[["up", "base"], {"row": "base", "against": "up"}, ["noisy", "base"],
                                         ["one", "base"], ["none", "base"]]))
    up, down, noisy, one, none = compare_rows(rows, grid.comparisons, "sysu-all-single")
    half = 4.303 / 3 ** 0.5  # t(2 dof) * sd 1 / sqrt(3)
    assert up["seeds"] == 3 and up["diff"] == pytest.approx(3.0) and up["sd"] == pytest.approx(1.0)
    assert (up["low"], up["high"]) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert up["reading"].startswith("higher") and down["reading"].startswith("lower")
    assert down["diff"] == pytest.approx(-3.0)
    assert noisy["diff"] == pytest.approx(1.0) and noisy["reading"].startswith("level")
    assert one["seeds"] == 1 and one["diff"] == pytest.approx(20.0) and one["reading"] == "one seed: no conclusion"
    assert none["seeds"] == 0 and none["reading"] == "not run yet"
    report = AblationReport(grid, "cfg", "vireid ablate ...", tmp_path, rows)
    md = report.markdown()
    assert "### sysu-all-single: each row against its reference (mAP, %)" in md
    assert f"| up | base | 3 | +3.00 ± 1.00 | [{3 - half:+.2f}, {3 + half:+.2f}] | higher: the interval excludes 0 |" in md
    assert "| one | base | 1 | +20.00 | - | one seed: no conclusion |" in md
    assert report.to_dict()["comparisons"][0][0]["reading"].startswith("higher")
    # a grid without pairs writes no comparison table
    plain = AblationReport(load_grid(write_grid(tmp_path / "p.yaml", [{"name": "base"}])), "cfg", "c", tmp_path, rows[:1])
    assert "against its reference" not in plain.markdown()


@pytest.mark.parametrize("compare, message", [
    ("up", "must be a list"),
    ([["up"]], "must be \\[row, against\\]"),
    ([["up", "missing"]], "'missing', which is not a row"),
    ([["up", "up"]], "with itself"),
    ([{"row": "up", "versus": "base"}], "must be \\[row, against\\]"),
])
def test_compare_entries_are_checked(tmp_path, compare, message):
    path = write_grid(tmp_path / "g.yaml", [{"name": "base"}, {"name": "up"}], compare=compare)
    with pytest.raises(ConfigError, match=message):
        load_grid(path)


def test_every_shipped_paper_grid_reads_out_its_conclusions():
    """The four paper grids (and CAJ) name the pairs their conclusions rest on, so the docs' reading is computed."""
    for name in ("dfw_sln_synth", "pdfenet_synth", "mag_mmt_synth", "caj_synth"):
        grid = load_grid(REPO / "src" / "vireid" / "configs" / "ablations" / f"{name}.yaml")
        assert len(grid.comparisons) >= 2, name
        compared = {c.row for c in grid.comparisons}
        assert compared == {r.name for r in grid.rows[1:]}, f"{name}: every row but the first is compared"
