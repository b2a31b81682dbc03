"""``python -m pipeline <stage>``: the one command line the Makefile wraps.

A :class:`UserError` (or any other failure) prints as one line on stderr with a non-zero exit;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from models import distributed, registry
from models.time_limit import TimeLimit
from models.vision import parameter_count
from pipeline import (
    config,
    leaderboard,
    model_board,
    permutation,
    processes,
    reuse,
    stages,
    studies,
    tracking,
    tune,
)
from pipeline.console import say
from pipeline.data import sample_columns, sources
from pipeline.errors import UserError
from pipeline.tasks import for_competition
from pipeline.tasks.image_setup import as_image_competition  # issue 20: images without a config

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text} (leave it out for no limit)")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _competition_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--competition", "-c", default=os.environ.get("COMPETITION") or None,
                        help="competition name: its config in pipeline/competitions/ when there is one "
                             "(default: the --data-dir folder's name, else house-prices)")
    parser.add_argument("--data-dir", type=Path, help="folder with the competition files (default data/<competition>)")
    parser.add_argument("--config", type=Path, help="a competition TOML file outside the package")
    parser.add_argument("--target", help="target column (for a competition without a config file)")
    parser.add_argument("--id", dest="id_column", help="id column (for a competition without a config file)")
    parser.add_argument("--task", choices=config.TASKS, help="override the task")
    parser.add_argument("--metric", help="override the metric")
    parser.add_argument("--layout", help="override the file layout (image competitions: see pipeline/images.py)")
    parser.add_argument("--time-limit", type=_positive(float), metavar="SECONDS",
                        help="seconds for the whole run, start to end: the portfolio fits models until it "
                             "(make: TIME=; default: the config's time_limit, else none)")
    parser.add_argument("--weights", metavar="PATH",
                        help="image competitions: a .safetensors or .pt state dict the model starts from "
                             "(default: the config's weights, else none)")
    parser.add_argument("--repeats", type=_positive(int), default=None,
                        help="repeated k-fold: N reshuffled k-fold runs, the scores' spread across them "
                             "(default: the config's [cv] repeats, else 1)")
    parser.add_argument("--seeds", type=_positive(int), default=None,
                        help="fit each model with N seeds and average them, the spread across seeds shown "
                             "(default: the config's [cv] seeds, else 1)")
    parser.add_argument("--fold-workers", type=_positive(int), default=None, metavar="N",
                        help="fit N folds at once in local processes, each fit at its share of the cores "
                             "(default: the config's [cv] fold_workers, else 1: one fold after another)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="fit the folds on the Dask cluster whose scheduler is at ADDRESS (tcp://host:port), "
                             "one thread per fit (default: the config's [cv] cluster, else none)")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", dest="model", help="registered model name (python -m pipeline models)")
    parser.add_argument("--param", "-p", dest="params", action="append", type=_param, default=[],
                        metavar="KEY=VALUE", help="model parameter, repeatable")


def _distributed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from the checkpoints a killed run of the same config left (default); "
                             "--no-resume starts again")
    env = os.environ.get
    parser.add_argument("--nproc", type=_positive(int), default=int(env("NPROC") or 1),
                        help="processes on this machine (torchrun, DistributedDataParallel): image stages only")
    parser.add_argument("--nnodes", type=_positive(int), default=int(env("NNODES") or 1), help="machines")
    parser.add_argument("--node-rank", type=int, default=int(env("NODE_RANK") or 0), help="this machine's rank")
    parser.add_argument("--master-addr", default=env("MASTER_ADDR"), help="address of the machine of rank 0")
    parser.add_argument("--master-port", type=int, default=int(env("MASTER_PORT") or 29500))


LAUNCH_OPTIONS = ("--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port")


def torchrun_command(args, argv: list[str]) -> list[str]:
    """``python -m torch.distributed.run ... -m pipeline ARGV``: this command on ``--nproc``
    processes per machine (one machine: ``--standalone``; several: rendezvous at ``--master-addr``)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc)]
    if args.nnodes > 1:
        if not args.master_addr:
            raise UserError("--nnodes needs --master-addr (MASTER_ADDR): the address of the machine of node rank 0")
        command += ["--nnodes", str(args.nnodes), "--node_rank", str(args.node_rank),
                    "--master_addr", args.master_addr, "--master_port", str(args.master_port)]
    else:
        command.append("--standalone")
    # The ranks get the command without these (torchrun would take --nproc for one of its own).
    rest, args_left = [], iter(argv)
    for arg in args_left:
        if arg.split("=", 1)[0] in LAUNCH_OPTIONS:
            if "=" not in arg:
                next(args_left, None)  # its value
            continue
        rest.append(arg)
    return [*command, "-m", "pipeline", *rest]


def check_distributed(args) -> None:
    """Before torchrun starts: only an image competition trains on several processes."""
    comp = _load_competition(args)
    if not for_competition(comp).distributed:
        raise UserError(f"--nproc {args.nproc} --nnodes {args.nnodes}: {comp.name} is a table, and only image "
                        "competitions train nets on several processes (give --nproc 1, NPROC=1)")


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line, ``error: ...`` with exit 2, as bad input is: the usage only with --help."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {self.prog.removeprefix('python -m pipeline').strip() or 'pipeline'}: "
                                   f"{message} (--help for usage)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE", parser_class=OneLineParser)

    data = stages.add_parser("data", help="download (Kaggle) or write the bundled default data")
    _competition_options(data)
    data.add_argument("--bundled", action="store_true", help="use the bundled data even with Kaggle credentials")

    for name, text in (("train", "k-fold train and log to MLflow"), ("submit", "train, predict and write the submission")):
        stage = stages.add_parser(name, help=text)
        _competition_options(stage)
        _model_options(stage)
        stage.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                           help="progress bars (default: only in a terminal)")
        stage.add_argument("--study", choices=("best", "ignore"), default="best",
                           help="which Optuna study parameters to start from: best, the study's best trial "
                                "when one exists (default); ignore, none (the config's and the model's own); "
                                "make: STUDY=")
        _distributed_options(stage)
        stage.add_argument("--drop-shifted", type=_positive(int), default=0, metavar="K",
                           help="drop the K columns that most tell the test set from the training set "
                                "(the shift line of every tabular run names them)")
        stage.add_argument("--register", action=argparse.BooleanOptionalAction, default=name == "submit",
                           help="register the run's model under the competition's name (default: submit only)")
        if name == "submit":
            stage.add_argument("--output", "-o", type=Path, default=Path("submission.csv"), help="submission file")
            stage.add_argument("--upload", action="store_true", help="upload to Kaggle after writing")
            stage.add_argument("--message", "-M", default="kaggle-pipeline submission", help="upload message")
            stage.add_argument("--wait", type=float, default=leaderboard.DEFAULT_WAIT, metavar="SECONDS",
                               help="seconds to wait for the public score after --upload (0: only record "
                                    "the submission; `leaderboard` fetches it later)")

    tune = stages.add_parser("tune", help="Optuna study for a model: prunes, resumes, runs workers in parallel")
    _competition_options(tune)
    tune.add_argument("--model", "-m", dest="model", help="registered model name (default: the config's)")
    tune.add_argument("--trials", type=_positive(int), default=50,
                      help="the study's total of finished trials: a rerun completes the remainder (default 50)")
    tune.add_argument("--jobs", "-j", type=_positive(int), default=1, help="worker processes (default 1)")
    tune.add_argument("--storage", help="Optuna storage: a journal file or an RDB URL "
                                        "(default $OPTUNA_STORAGE, else .optuna/journal.log)")
    tune.add_argument("--seed", type=int, default=0, help="sampler seed (each worker derives its own)")

    dashboard = stages.add_parser("dashboard", help="serve optuna-dashboard on 127.0.0.1")
    dashboard.add_argument("--storage", help="as for tune")
    dashboard.add_argument("--port", type=int, default=8080)

    models = stages.add_parser("models", help="list registered models")
    models.add_argument("--kind", choices=("tabular", "vision"))

    ui = stages.add_parser("ui", help="serve the MLflow UI on 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--workers", type=_positive(int), default=1, help="server worker processes (default 1)")
    reuse.add_parsers(stages)  # predict, blend, serve
    leaderboard.add_parser(stages)
    model_board.add_parser(stages)
    permutation.add_parser(stages)
    return parser


def _load_competition(args) -> config.Competition:
    overrides = {key: getattr(args, key) for key in ("task", "metric", "layout", "time_limit", "weights", "repeats", "seeds",
                                                    "fold_workers", "cluster")}
    data_dir = _data_dir(args)
    target, id_column = args.target, args.id_column
    # A folder is enough (no config, no --competition): the id and target come from its sample submission.
    folder_config = data_dir is not None and (config.CONFIG_DIR / f"{Path(data_dir).resolve().name}.toml").is_file()
    if args.config is None and args.competition is None and data_dir is not None and not folder_config \
            and not (target and id_column):
        found = sample_columns.infer(data_dir, target=target, id_column=id_column)
        default = config.load(config.DEFAULT_COMPETITION)
        if found and not (target or id_column) and found == (default.id, default.target):
            found = None  # house prices in a folder of another name: the bundled config, as before
        if found:
            sample_columns.say_inferred(found, target=target, id_column=id_column)
            id_column, target = found
    name = config.competition_name(args.competition, data_dir=data_dir, config_file=args.config,
                                   columns_given=bool(target or id_column))
    comp = config.load(name, config_file=args.config, target=target, id_column=id_column, **overrides)
    # --- images (issue 20): a competition without a config whose files are images is an image one
    configured = args.config is not None or (config.CONFIG_DIR / f"{name}.toml").is_file()
    if not configured and data_dir is not None:
        found_target, found_id = sample_columns.resolve_in_folder(data_dir, comp.target, comp.id)  # Default: default
        comp = as_image_competition(dataclasses.replace(comp, target=found_target, id=found_id), data_dir)
    if comp.weights and not for_competition(comp).takes_weights:  # said, not ignored: a table has no net
        given = "--weights" if args.weights else f"{Path(args.config or config.CONFIG_DIR / f'{name}.toml').name}: weights"
        raise UserError(f"{given} {comp.weights}: {comp.name} is a table, and only image competitions start a "
                        "net from a state dict (leave the weights out)")
    return comp


def _data_dir(args) -> Path | None:
    """The data folder given (``--data-dir`` or ``$DATA_DIR``); None: the default one."""
    if args.data_dir is not None:
        return args.data_dir
    return Path(os.environ["DATA_DIR"]) if os.environ.get("DATA_DIR") else None


def _stage_data(args) -> None:
    name = config.competition_name(args.competition, data_dir=_data_dir(args), config_file=args.config,
                                   columns_given=bool(args.target or args.id_column))
    if args.config is None and name not in config.available() and not args.bundled:  # a Kaggle slug
        data_dir = _data_dir(args) or stages.default_data_dir(name)
        say(f"data: {sources.fill_from_kaggle(name, data_dir)} in {data_dir}")
        return
    comp = _load_competition(args)
    data_dir = _data_dir(args) or stages.default_data_dir(comp.name)
    source = sources.fill(comp, data_dir, prefer_bundled=args.bundled)
    say(f"data: {source} in {data_dir}")


def _stage_train(args, output: Path | None) -> None:
    comp = _load_competition(args)
    with distributed.process_group():  # under torchrun: join the other ranks (a no-op otherwise)
        stages.run(
            comp,
            stages.filled_data_dir(comp, _data_dir(args)),
            model=args.model,
            params=dict(args.params),
            output=output,
            upload_message=args.message if getattr(args, "upload", False) else None,
            score_wait=getattr(args, "wait", 0.0),
            drop_shifted=args.drop_shifted,
            progress=args.progress,
            tuned=args.study == "best",
            resume=args.resume,
            register=args.register,
            # TIME= counts the interpreter and imports too
            time_limit=TimeLimit.start(comp.time_limit, age=processes.age()),
            config_file=args.config,
        )


def _stage_tune(args) -> None:
    comp = _load_competition(args)
    run = tune.tune if args.model else tune.tune_default
    options = {"model": args.model} if args.model else {}
    run(comp, stages.filled_data_dir(comp, _data_dir(args)), n_trials=args.trials,
        time_limit=TimeLimit.start(comp.time_limit, age=processes.age(), clock=time.time),
        jobs=args.jobs, storage=args.storage, seed=args.seed, **options)


def _stage_dashboard(args) -> None:
    command = tune.dashboard_command(args.storage, args.port)
    say(f"optuna-dashboard on http://127.0.0.1:{args.port} for {studies.describe_storage(command[1])}")
    os.execv(command[0], command)


def _stage_models(args) -> None:
    for entry in registry.list_models(kind=args.kind):
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            built = entry.build()
        size = f"{parameter_count(built):>12,d} params" if isinstance(built, torch.nn.Module) else ""
        print(f"{entry.name:<22} {entry.kind:<8} {','.join(sorted(entry.tasks)):<20} {size:<20} {entry.description}")


def _stage_ui(args) -> None:
    command = tracking.ui_command(args.port, args.workers)
    # MLflow 3 opens in its GenAI view (traces); workflowType picks the model-training one.
    say(f"MLflow UI on http://127.0.0.1:{args.port}/#/experiments?workflowType=machine_learning "
        f"for {tracking.tracking_uri()}")
    os.execv(command[0], command)


STAGES = {
    "data": _stage_data,
    "train": lambda args: _stage_train(args, None),
    "submit": lambda args: _stage_train(args, args.output),
    "tune": _stage_tune,
    "dashboard": _stage_dashboard,
    "models": _stage_models,
    "ui": _stage_ui,
    **reuse.STAGES,
    **leaderboard.STAGES,
    **model_board.STAGES,
    **permutation.STAGES,
}


@contextmanager
def _sigterm_raises_terminated() -> Iterator[None]:
    """SIGTERM anywhere in a stage raises ``tracking.Terminated`` (exit 143), inside an MLflow run
    or not (``tracking.run`` installs the same for its run, and puts this one back after)."""

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while stopping: no more waiting
        raise tracking.Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error, already printed as one line (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    try:
        if getattr(args, "nproc", 1) * getattr(args, "nnodes", 1) > 1 and not distributed.launched():
            check_distributed(args)
            command = torchrun_command(args, argv)  # the same command, once per process
            sys.stdout.flush()
            os.execv(command[0], command)
        with _sigterm_raises_terminated():
            STAGES[args.stage](args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except tracking.Terminated:
        if args.debug:
            raise
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: {type(exc).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0
