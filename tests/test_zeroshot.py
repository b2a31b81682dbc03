"""bench/zeroshot.py: the portfolio's order rebuilt from recorded results (suite logs and
portfolio_members JSON lines), and the toml rewritten with only its blocks' order changed."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline import model_board

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import zeroshot  # noqa: E402

PORTFOLIO = """\
# The portfolio (a test copy): comments are kept.

# make tune: kept where it is
[tune]
regression = ["first"]

[[regression]]
name = "first"
model = "lightgbm"
cost = 1.0

# cheap: a comment right above a header moves with its block
[[regression]]
name = "cheap"
model = "ridge"
cost = 0.1

[[regression]]
name = "strong"
model = "lightgbm"
params = { num_leaves = 128 }   # inline comment
cost = 3.0

[[regression]]
name = "never"
model = "mlp"
cost = 4.0

[[classification]]
name = "first"
model = "lightgbm_classifier"
cost = 1.0
"""


def _log(folder: Path, task: str, rows: list[tuple], *, metric: str = "rmse", mtime: float = 1_000_000.0,
         first_pass: dict[str, tuple[float, int]] | None = None) -> Path:
    """A ``<task>-ours.log`` whose leaderboard is the one the package prints (model_board.render).
    ``rows``: (name, score, seconds, weight, bags) for a finished one, (name, status, reason) else."""
    board = []
    for row in rows:
        if len(row) == 5:
            name, score, seconds, weight, bags = row
            board.append(model_board.Row(name, "finished", score, 0.01, seconds, 0.5, weight, bags))
        else:
            board.append(model_board.Row(row[0], row[1], reason=row[2]))
    frame = model_board.table([model_board.Row("portfolio", "final", 1.0, 0.01, 9.0, 0.5), *board],
                              greater_is_better=False)
    progress = [f"  {name}: cv {metric} {score} in {seconds} s; ensemble 1.0 at 10 of 60 s"
                for name, (score, seconds) in (first_pass or {}).items()]
    text = "\n".join([f"task: regression, metric: {metric}, model: portfolio of ..., time limit 60 s", *progress,
                      f"leaderboard ({metric}):",
                      *(f"  {line}" for line in model_board.render(frame, metric).splitlines())]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}-ours.log"
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def test_greedy_order_on_a_hand_computed_example():
    errors = {"t1": {"first": 0.0, "cheap": 1.0, "strong": 0.5},
              "t2": {"first": 1.0, "cheap": 0.0, "strong": 0.0},
              "t3": {"first": 0.5, "strong": 0.0}}
    configs = ["first", "cheap", "strong", "never"]
    cost = {"first": 1.0, "cheap": 0.2, "strong": 1.0, "never": 4.0}
    # first (pinned): best (0, 1, 0.5), mean 1/2. cheap lowers t2 by 1: 1/3 (1.67 a unit of cost);
    # strong lowers t2 by 1 and t3 by 0.5: 1/2 (0.5 a unit).
    by_cost = zeroshot.greedy_order(errors, configs, cost, {})
    assert [s.config for s in by_cost] == ["first", "cheap", "strong", "never"]
    assert [s.gain for s in by_cost[:3]] == pytest.approx([0.5, 1 / 3, 1 / 6])
    assert [s.mean_error for s in by_cost[:3]] == pytest.approx([0.5, 1 / 6, 0.0])
    assert by_cost[3].gain is None  # never recorded: last, in file order
    by_gain = zeroshot.greedy_order(errors, configs, cost, {}, per_cost=False)
    assert [s.config for s in by_gain] == ["first", "strong", "cheap", "never"]
    assert [s.gain for s in by_gain[:3]] == pytest.approx([0.5, 0.5, 0.0])
    # unpinned, the greedy picks the first itself: strong alone brings the mean to 0.5 / 3
    assert [s.config for s in zeroshot.greedy_order(errors, configs, cost, {}, per_cost=False, pin_first=False)][:2] \
        == ["strong", "first"]


def test_ties_go_to_the_larger_weight_then_the_cheaper():
    errors = {"t": {"first": 0.0, "a": 1.0, "b": 1.0, "c": 1.0}}
    cost = {"first": 1.0, "a": 2.0, "b": 1.0, "c": 3.0}
    steps = zeroshot.greedy_order(errors, ["first", "a", "b", "c"], cost, {"c": 0.4})
    assert [s.config for s in steps] == ["first", "c", "b", "a"]


def test_a_configuration_missing_on_a_task_counts_as_the_worst_there(tmp_path):
    _log(tmp_path / "run", "cps1988_wage", [("first", 2.0, 2.0, 1.0, 1), ("cheap", 3.0, 0.2, 0.0, 1),
                                            ("strong", 1.0, 6.0, 0.0, 1)])
    _log(tmp_path / "run", "hotel_price", [("first", 5.0, 4.0, 0.5, 1), ("cheap", 4.0, 0.4, 0.5, 1),
                                           ("strong", "skipped", "not started: 1 s of work left")], metric="mae")
    table = zeroshot.collect([tmp_path / "run"], print)["regression"]
    errors = table.errors(["first", "cheap", "strong", "never"])
    assert errors == {"cps1988_wage": {"first": 0.5, "cheap": 1.0, "strong": 0.0},
                      "hotel_price": {"first": 1.0, "cheap": 0.0}}  # strong: no error where it was skipped
    assert table.cells["hotel_price"]["strong"].status == "skipped"
    configs = ["first", "cheap", "strong", "never"]
    steps = zeroshot.greedy_order(errors, configs, dict.fromkeys(configs, 1.0), {}, per_cost=False)
    # after first: (0.5, 1). cheap lowers hotel_price by 1: gain 1/2. strong lowers cps1988_wage by 0.5
    # and, the worst where it was skipped, nothing on hotel_price: gain 1/4 (1/2 if that task were left out)
    assert [(s.config, s.gain) for s in steps[:3]] == [("first", 0.25), ("cheap", 0.5), ("strong", 0.25)]
    # its cost: the median of its seconds over the first's on the tasks it ran with it
    assert zeroshot.costs(table, ["first", "cheap", "strong"], {})["strong"] == pytest.approx(3.0)


def test_the_latest_record_counts_and_a_later_skip_keeps_the_earlier_score(tmp_path):
    _log(tmp_path / "old", "cps1988_wage", [("first", 1.0, 2.0, 1.0, 1), ("strong", 0.5, 6.0, 0.0, 1)], mtime=1000.0)
    _log(tmp_path / "new", "cps1988_wage", [("first", 0.8, 2.0, 1.0, 3), ("strong", "dropped", "after 1 of 5 folds")],
         first_pass={"first": (0.9, 1)}, mtime=2000.0)
    row = zeroshot.collect([tmp_path / "new", tmp_path / "old"], print)["regression"].cells["cps1988_wage"]
    assert row["first"].score == 0.9  # the first pass, not the score after 3 bags
    assert row["first"].seconds == 1.0
    assert row["strong"].score == 0.5 and row["strong"].status == "finished"


def test_members_records_are_tasks_of_their_own(tmp_path):
    record = tmp_path / "members.jsonl"
    row = {"task": "hotel_price", "seed": 0, "rows": 2000, "new": "cheap", "with": 7.0, "without": 7.5, "weight": 0.3,
           "scores": {"first": 8.0, "cheap": 7.5}, "seconds": {"first": 4.0, "cheap": 1.0}}
    record.write_text(json.dumps(row) + "\n")
    cells = zeroshot.collect([record], print)["regression"].cells
    assert set(cells) == {"hotel_price@seed0/2000rows"}
    assert cells["hotel_price@seed0/2000rows"]["cheap"].weight == 0.3
    assert cells["hotel_price@seed0/2000rows"]["first"].seconds == 4.0


def test_write_reorders_the_blocks_and_keeps_every_byte_of_them(tmp_path, capsys):
    portfolio = tmp_path / "tabular.toml"
    portfolio.write_text(PORTFOLIO)
    _log(tmp_path / "run", "cps1988_wage", [("first", 1.0, 2.0, 1.0, 1), ("cheap", 3.0, 0.2, 0.0, 1),
                                            ("strong", 0.5, 6.0, 0.0, 1)])
    assert zeroshot.main([str(tmp_path / "run"), "--portfolio", str(portfolio), "--by", "gain", "--write"]) == 0
    assert "1. first" in capsys.readouterr().out
    new = portfolio.read_text()
    # strong (gain 1/2) before cheap (0); never: never scored, last
    assert [e["name"] for e in tomllib.loads(new)["regression"]] == ["first", "strong", "cheap", "never"]
    before, after = tomllib.loads(PORTFOLIO), tomllib.loads(new)
    assert sorted(after["regression"], key=str) == sorted(before["regression"], key=str)
    assert after["tune"] == before["tune"] and after["classification"] == before["classification"]
    assert sorted(new.splitlines()) == sorted(PORTFOLIO.splitlines())  # every line kept, comments included
    assert "# cheap: a comment right above a header moves with its block\n[[regression]]\nname = \"cheap\"" in new
    assert new.startswith(PORTFOLIO[:PORTFOLIO.index("[[regression]]")])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tabular.toml")]  # no temporary left


def test_a_malformed_line_is_reported_in_one_line(tmp_path, capsys):
    log = _log(tmp_path / "run", "cps1988_wage", [("first", 1.0, 2.0, 1.0, 1), ("cheap", 3.0, 0.2, 0.0, 1)])
    lines = log.read_text().splitlines()
    lines[-1] = "  cheap            ???"
    lines[-2] = lines[-2][:lines[-2].index("finished") + 12]  # a finished row cut short
    log.write_text("\n".join(lines) + "\n")
    record = tmp_path / "members.jsonl"
    record.write_text('{"task": "hotel_price", "scores": {"first": 8.0}}\n{"task": "hotel_pri\n')
    portfolio = tmp_path / "tabular.toml"
    portfolio.write_text(PORTFOLIO)
    assert zeroshot.main([str(tmp_path / "run"), str(record), "--portfolio", str(portfolio)]) == 0
    said = capsys.readouterr()
    assert "Traceback" not in said.err
    errors = said.err.splitlines()
    assert len(errors) == 3
    assert any(e.startswith(f"{log}:{len(lines)}: no status") for e in errors)
    assert any(e.startswith(f"{log}:{len(lines) - 1}: a finished row without its numbers") for e in errors)
    assert any(e.startswith(f"{record}:2: unreadable record") for e in errors)
    assert "hotel_price@seed0" in said.out  # the good line still counts
    assert portfolio.read_text() == PORTFOLIO  # nothing written without --write


def test_a_missing_result_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert zeroshot.main([str(tmp_path / "nowhere"), "--portfolio", str(tmp_path / "nowhere.toml")]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "Traceback" not in said


def test_a_portfolio_with_two_entries_of_one_name_is_not_reordered():
    twice = PORTFOLIO + '\n[[regression]]\nname = "cheap"\nmodel = "lasso"\ncost = 0.1\n'  # two blocks named cheap
    with pytest.raises(zeroshot.UserError, match="the same name"):
        zeroshot.reorder(twice, {"regression": ["first", "strong", "cheap", "never"]})
