"""The portfolio's order rebuilt from recorded results, as AutoGluon's zeroshot portfolios are
(TabRepo's ``zeroshot_configs``): greedy forward selection over a task x configuration table.

    PYTHONPATH=. .venv/bin/python bench/zeroshot.py [RESULTS ...] [--by gain] [--no-pin] [--write]

RESULTS: suite folders (``bench/.results/tabular-*/``, their ``<task>-ours.log``), single logs,
or JSON lines from ``bench/portfolio_members.py --record``; by default every
``bench/.results/tabular-*/`` and ``bench/.results/members*.jsonl``.

The table, one per section of ``pipeline/portfolios/tabular.toml`` (regression, classification):
- A log gives each configuration's first-pass score and seconds (its line ``NAME: cv METRIC S in
  N s``; the leaderboard's are after extra bags, which only the time left decides) and its
  weight in the ensemble, from the leaderboard at its end. Skipped, dropped and left-out
  configurations have no score there.
- A JSON line gives the scores and seconds of one ``portfolio_members`` run. Its folds (``seed``,
  ``rows``) are not the suite's, so it is a task of its own: ``hotel_price@seed0``.
- The latest record per task and configuration counts (files by modification time, lines in
  order), not the mean: the code changes between runs (features, time rules), so an older record
  measures an older configuration, and with one to three records per cell there is little noise
  to average away.

The order: per task, each configuration's normalised error, 0 for the best score on the task and
1 for the worst; the portfolio's error on a task is its best member's (1 before any); its value is
the mean over the tasks. A configuration with no score on a task (skipped for time, left out)
counts as the worst there: it lowers nothing on that task, which is what a run that did not reach
it got from it. The first entry of a section stays first (``--no-pin`` lets it move): it is what
every limit reaches, it prices the others (``cost`` is relative to it) and must stop itself at a
time limit. Then, greedily, the configuration whose gain (the drop of the mean) per unit of cost
is largest, as the greedy for the best anytime schedule does (Streeter and Golovin): a cheap,
strong configuration belongs early, because a short limit reaches only the first few; ``--by
gain`` ranks by gain alone. Ties (once no configuration lowers the mean, every gain is 0) go to
the larger mean ensemble weight, then the cheaper. A configuration's cost: the median over tasks
of its seconds over the first entry's seconds on the same task; the toml's ``cost`` where they
never ran together. Configurations never recorded keep their relative order at the end.

``--write`` rewrites the toml with each section's ``[[section]]`` blocks in the new order: every
block's text (with the comment lines right above its header) is kept byte for byte, and the
blank lines between blocks, the other tables and the comments between stay where they were. The
result must load (tomllib) to the same entries in the new order, or nothing is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import tabular_suite  # noqa: E402

from pipeline.errors import UserError  # noqa: E402
from pipeline.metrics import get as get_metric  # noqa: E402

PORTFOLIO = ROOT / "pipeline" / "portfolios" / "tabular.toml"
RESULTS = ROOT / "bench" / ".results"
SECTIONS = ("regression", "classification")
STATUSES = ("finished", "final", "skipped", "dropped", "left out")
_TASK_LINE = re.compile(r"^task: (\w+), metric: (\w+)")
_FIRST_PASS = re.compile(r"^\s+(\S+): cv \S+ (\S+) in (\d+) s; ensemble")
_BOARD_TITLE = re.compile(r"^leaderboard \((\w+)\):$")
_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_-]+)\s*\]\]?\s*(#.*)?$")


@dataclass
class Record:
    """One configuration on one task, as one run recorded it."""

    task: str
    section: str
    greater_is_better: bool
    config: str
    status: str  # finished, or why it has no score: skipped, dropped, left out
    score: float = math.nan
    seconds: float = math.nan
    weight: float = math.nan


@dataclass
class Table:
    """One section's latest records: ``cells[task][config]``."""

    section: str
    cells: dict[str, dict[str, Record]] = field(default_factory=dict)
    greater_is_better: dict[str, bool] = field(default_factory=dict)

    def errors(self, configs: list[str]) -> dict[str, dict[str, float]]:
        """Per task, each scored configuration's normalised error: 0 the best, 1 the worst."""
        errors = {}
        for task, row in self.cells.items():
            scores = {c: r.score for c, r in row.items() if c in configs and math.isfinite(r.score)}
            if not scores:
                continue
            sign = -1.0 if self.greater_is_better[task] else 1.0
            best, worst = min(sign * s for s in scores.values()), max(sign * s for s in scores.values())
            errors[task] = {c: (sign * s - best) / (worst - best) if worst > best else 0.0 for c, s in scores.items()}
        return errors


@dataclass
class Step:
    config: str
    cost: float
    gain: float | None  # the drop of the mean normalised error; None: never recorded
    mean_error: float | None  # the portfolio's mean after it


def _section(kind: str) -> str:
    return "regression" if kind == "regression" else "classification"


def _number(text: str) -> float:
    return float(text) if text.strip() else math.nan


def parse_log(path: Path, warn) -> list[Record]:
    """The records of one ``<task>-ours.log``: its leaderboard's rows with the first-pass scores."""
    lines = path.read_text(errors="replace").splitlines()
    task = path.name.removesuffix("-ours.log")
    kind = metric = None
    first_pass: dict[str, tuple[float, float]] = {}
    board = None
    for number, line in enumerate(lines):
        if match := _TASK_LINE.match(line):
            kind, metric = match.groups()
        elif (match := _FIRST_PASS.match(line)) and match.group(1) not in first_pass:
            first_pass[match.group(1)] = (_number(match.group(2)), float(match.group(3)))
        elif match := _BOARD_TITLE.match(line):
            board, metric = number, match.group(1)
    if board is None or board + 1 >= len(lines):
        warn(f"{path}: no leaderboard (the run did not finish); skipped")
        return []
    if kind is None:
        if task not in tabular_suite.TASKS:
            warn(f"{path}: no 'task:' line and {task!r} is not a suite task; skipped")
            return []
        kind = tabular_suite.TASKS[task].kind
    try:
        greater = get_metric(metric).greater_is_better
    except UserError as error:
        warn(f"{path}: {error}; skipped")
        return []
    header = lines[board + 1]
    titles = ["status", f"cv {metric}", "± folds", "fit s", "weight", "bags"]
    if not header.strip().startswith("model") or any(t not in header for t in titles):
        warn(f"{path}:{board + 2}: not a leaderboard header; skipped")
        return []
    # numbers are right-aligned under their titles, words left-aligned: each cell ends where its title does
    ends = {t: header.index(t) + len(t) for t in titles[1:]}
    status_at = header.index("status")
    records = []
    for number, line in enumerate(lines[board + 2:], start=board + 3):
        if not line.startswith("  ") or not line.strip():
            break
        name = line.split()[0]
        status = next((s for s in STATUSES if line[status_at:].startswith(s)), None)
        if status is None:
            warn(f"{path}:{number}: no status in {line.strip()!r}; skipped")
            continue
        if status == "final":
            continue
        if status != "finished":
            records.append(Record(task, _section(kind), greater, name, status))
            continue
        if len(line) < ends["bags"]:
            warn(f"{path}:{number}: a finished row without its numbers: {line.strip()!r}; skipped")
            continue
        try:
            cell = {t: _number(line[:end].rsplit(" ", 1)[-1]) for t, end in ends.items()}
        except ValueError:
            warn(f"{path}:{number}: unreadable numbers in {line.strip()!r}; skipped")
            continue
        score, seconds = cell[f"cv {metric}"], cell["fit s"]
        bags = 1 if math.isnan(cell["bags"]) else int(cell["bags"])
        if name in first_pass:
            score = first_pass[name][0]
            if bags > 1:
                seconds = first_pass[name][1]
        elif bags > 1:
            seconds /= bags
        records.append(Record(task, _section(kind), greater, name, status, score, seconds, cell["weight"]))
    return records


def parse_jsonl(path: Path, warn) -> list[Record]:
    """The records of ``bench/portfolio_members.py --record`` lines."""
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            task = tabular_suite.TASKS[row["task"]]
            label = f"{task.name}@seed{row.get('seed', 0)}" + (f"/{row['rows']}rows" if row.get("rows") else "")
            greater = get_metric(task.metric).greater_is_better
            records += [Record(label, _section(task.kind), greater, config, "finished", float(score),
                               float(row.get("seconds", {}).get(config, math.nan)),
                               float(row["weight"] if config == row.get("new") else math.nan))
                        for config, score in row["scores"].items()]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            warn(f"{path}:{number}: unreadable record ({type(error).__name__}: {error}); skipped")
    return records


def collect(sources: list[Path], warn) -> dict[str, Table]:
    """Each section's table of the latest record per task and configuration."""
    files = []
    for source in sources:
        if source.is_dir():
            files += sorted(source.glob("*-ours.log"))
        elif source.exists():
            files.append(source)
        else:
            raise UserError(f"{source}: no such file or folder")
    files.sort(key=lambda f: (f.stat().st_mtime, str(f)))  # later records replace earlier ones
    tables = {s: Table(s) for s in SECTIONS}
    for file in files:
        parse = parse_jsonl if file.suffix == ".jsonl" else parse_log
        for record in parse(file, warn):
            table = tables[record.section]
            table.greater_is_better[record.task] = record.greater_is_better
            row = table.cells.setdefault(record.task, {})
            if record.status == "finished" or record.config not in row:  # a skip does not hide an earlier score
                row[record.config] = record
    return tables


def costs(table: Table, configs: list[str], listed: dict[str, float]) -> dict[str, float]:
    """Each configuration's seconds relative to the first configuration's on the same tasks
    (median over tasks); the toml's ``cost`` where they never ran together."""
    first = configs[0]
    result = {}
    for config in configs:
        ratios = [row[config].seconds / row[first].seconds for row in table.cells.values()
                  if config in row and first in row and row[first].seconds > 0 and math.isfinite(row[config].seconds)]
        result[config] = (max(statistics.median(ratios), 1e-3) if ratios
                          else listed.get(config, 1.0) / listed.get(first, 1.0))
    return result


def greedy_order(errors: dict[str, dict[str, float]], configs: list[str], cost: dict[str, float],
                 weight: dict[str, float], *, per_cost: bool = True, pin_first: bool = True) -> list[Step]:
    """The configurations in the order that lowers the mean over tasks of the best member's
    normalised error fastest (per unit of cost with ``per_cost``); a configuration without an
    error on a task counts as the worst there (1)."""
    best = dict.fromkeys(errors, 1.0)

    def gain(config: str) -> float:
        if not best:
            return 0.0
        return sum(b - min(b, errors[t].get(config, 1.0)) for t, b in best.items()) / len(best)

    def take(config: str) -> Step:
        step = Step(config, cost[config], gain(config), None)
        for task in best:
            best[task] = min(best[task], errors[task].get(config, 1.0))
        step.mean_error = sum(best.values()) / len(best) if best else None
        return step

    recorded = [c for c in configs if any(c in row for row in errors.values())]
    steps = []
    left = list(recorded)
    if pin_first and configs and configs[0] in left:
        steps.append(take(configs[0]))
        left.remove(configs[0])
    while left:
        def rank(config: str) -> tuple:
            worth = gain(config) / cost[config] if per_cost else gain(config)
            return (-round(worth, 12), -weight.get(config, 0.0), cost[config], configs.index(config))

        chosen = min(left, key=rank)
        steps.append(take(chosen))
        left.remove(chosen)
    if pin_first and configs and configs[0] not in recorded:
        steps.insert(0, Step(configs[0], cost[configs[0]], None, None))
    steps += [Step(c, cost[c], None, None) for c in configs if c not in recorded and (c != configs[0] or not pin_first)]
    return steps


def mean_weights(table: Table) -> dict[str, float]:
    weights: dict[str, list[float]] = {}
    for row in table.cells.values():
        for config, record in row.items():
            if math.isfinite(record.weight):
                weights.setdefault(config, []).append(record.weight)
    return {c: sum(w) / len(w) for c, w in weights.items()}


def render(table: Table, configs: list[str], errors: dict[str, dict[str, float]]) -> str:
    """Scores with their normalised errors, then seconds and weights, a row per configuration."""
    tasks = sorted(table.cells)
    width = max([14, *map(len, tasks)])
    name_width = max(map(len, configs))
    lines = [f"{'score (error)':<{name_width}}  " + "  ".join(f"{t:>{width}}" for t in tasks)]
    for config in configs:
        cells = []
        for task in tasks:
            record = table.cells[task].get(config)
            if record is None:
                cells.append("-")
            elif record.status != "finished" or not math.isfinite(record.score):
                cells.append(record.status)
            else:
                cells.append(f"{record.score:.5g} ({errors.get(task, {}).get(config, math.nan):.2f})")
        lines.append(f"{config:<{name_width}}  " + "  ".join(f"{c:>{width}}" for c in cells))
    lines.append(f"{'seconds weight':<{name_width}}")
    for config in configs:
        cells = []
        for task in tasks:
            record = table.cells[task].get(config)
            if record is None or not math.isfinite(record.seconds):
                cells.append("-")
            else:
                weight = f" w{record.weight:.2f}" if math.isfinite(record.weight) else ""
                cells.append(f"{record.seconds:.1f}s{weight}")
        lines.append(f"{config:<{name_width}}  " + "  ".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def _blocks(text: str) -> tuple[list[str], list[tuple[str, int]]]:
    """``text`` as pieces that join back to it, and the ``[[section]]`` blocks among them (their
    section and piece index). A block: the comment lines right above its header, the header, and
    its lines up to the last one that is not blank before the next header's comments."""
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if _HEADER.match(line.rstrip("\r\n"))]
    starts = []
    for i in headers:
        start = i
        while start > 0 and lines[start - 1].startswith("#") and start - 1 not in headers:
            start -= 1
        starts.append(start)
    pieces, blocks = ["".join(lines[:starts[0]]) if starts else text], []
    for n, (start, header) in enumerate(zip(starts, headers, strict=True)):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        body_end = end
        while body_end > header + 1 and not lines[body_end - 1].strip():
            body_end -= 1
        table_name = _HEADER.match(lines[header].rstrip("\r\n")).group(1)
        is_entry = lines[header].lstrip().startswith("[[") and table_name in SECTIONS
        if is_entry:
            blocks.append((table_name, len(pieces)))
        pieces.append("".join(lines[start:body_end]))
        pieces.append("".join(lines[body_end:end]))
    return pieces, blocks


def reorder(text: str, orders: dict[str, list[str]]) -> str:
    """``text`` (the toml) with each section's blocks in ``orders[section]`` (by entry name; names
    not listed keep their places after those listed); raises UserError if the result would not
    load to the same entries in that order."""
    pieces, blocks = _blocks(text)
    new = list(pieces)
    for section in SECTIONS:
        slots = [i for s, i in blocks if s == section]
        named = {tomllib.loads(pieces[i])[section][0]["name"]: pieces[i] for i in slots}
        if len(named) < len(slots):
            raise UserError(f"two [[{section}]] blocks have the same name; nothing written")
        order = [n for n in orders.get(section, []) if n in named]
        order += [n for n in named if n not in order]
        for slot, name in zip(slots, order, strict=True):
            new[slot] = named[name]
    result = "".join(new)
    before, after = tomllib.loads(text), tomllib.loads(result)
    for section in SECTIONS:
        by_name = {e["name"]: e for e in before.get(section, [])}
        expected = [by_name[n] for n in orders.get(section, []) if n in by_name]
        expected += [e for e in before.get(section, []) if e not in expected]
        if after.get(section, []) != expected:
            raise UserError(f"reordering the [[{section}]] blocks would change their entries; nothing written")
    if {k: v for k, v in before.items() if k not in SECTIONS} != {k: v for k, v in after.items() if k not in SECTIONS}:
        raise UserError("reordering would change the file's other tables; nothing written")
    return result


def write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", newline="") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _default_sources() -> list[Path]:
    return [*sorted(p for p in RESULTS.glob("tabular-*") if p.is_dir()), *sorted(RESULTS.glob("members*.jsonl"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path, help="suite folders, logs, members JSONL")
    parser.add_argument("--portfolio", type=Path, default=PORTFOLIO)
    parser.add_argument("--by", choices=("gain-per-cost", "gain"), default="gain-per-cost")
    parser.add_argument("--no-pin", action="store_true", help="let the first entry of a section move")
    parser.add_argument("--write", action="store_true", help="rewrite the portfolio in the new order")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        text = args.portfolio.read_text()
        entries = tomllib.loads(text)
        tables = collect(args.results or _default_sources(), lambda said: print(said, file=sys.stderr))
        orders = {}
        for section in SECTIONS:
            configs = [e["name"] for e in entries.get(section, [])]
            table = tables[section]
            if not configs:
                continue
            others = sorted({c for row in table.cells.values() for c in row} - set(configs))
            errors = table.errors(configs)
            cost = costs(table, configs, {e["name"]: e.get("cost", 1.0) for e in entries[section]})
            steps = greedy_order(errors, configs, cost, mean_weights(table), per_cost=args.by == "gain-per-cost",
                                 pin_first=not args.no_pin)
            print(f"[{section}] {len(table.cells)} task(s): {', '.join(sorted(table.cells)) or 'none'}")
            if table.cells:
                print(render(table, configs, errors))
            if others:
                print(f"not entries of the portfolio (left out of the order): {', '.join(others)}")
            print(f"order ({args.by}; cost: seconds relative to {configs[0]}):")
            for n, step in enumerate(steps, start=1):
                said = ("never scored" if step.gain is None else
                        f"gain {step.gain:.4f}, mean error {step.mean_error:.4f}")
                pinned = " (pinned)" if n == 1 and not args.no_pin else ""
                print(f"  {n:>2}. {step.config:<{max(map(len, configs))}}  cost {step.cost:7.3f}  {said}{pinned}")
            orders[section] = [s.config for s in steps]
            print()
        if args.write:
            new = reorder(text, orders)
            if new != text:
                write_atomically(args.portfolio, new)
            print(f"{args.portfolio}: {'rewritten in the new order' if new != text else 'already in this order'}")
    except (UserError, OSError, tomllib.TOMLDecodeError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
