"""The command line of the stages that reuse logged models: ``predict``, ``blend`` and ``serve``.

``pipeline.cli`` adds these parsers and stages beside its own (``add_parsers``, ``STAGES``).
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from pipeline import blend, config, models_io, predict, store_checks, tracking
from pipeline.console import say
from pipeline.errors import UserError

MODEL_HELP = "models:/<competition>@champion, models:/<competition>/<version> or runs:/<run id>/model"


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", dest="model_uri", help=MODEL_HELP + " (default: the competition's @champion)")
    parser.add_argument("--competition", "-c", default=os.environ.get("COMPETITION") or None,
                        help="refuse a model of any other competition (default: the model's own)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ["DATA_DIR"]) if os.environ.get("DATA_DIR") else None,
                        help="folder of the default input (default data/<competition>)")
    parser.add_argument("--target", help="as given to submit: a competition without a config is named after "
                                         "--data-dir, and so is its registered model")
    parser.add_argument("--id", dest="id_column", help="as given to submit (see --target)")


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", type=Path, help="rows to score, as in test.csv (default: the "
                        "competition's test file in --data-dir)")
    parser.add_argument("--sample", type=Path, help="sample submission (default: the one beside the input, "
                        "else ids and one target column)")
    parser.add_argument("--output", "-o", type=Path, default=Path("submission.csv"), help="submission file")


def add_parsers(stages) -> None:
    scorer = stages.add_parser("predict", help="score a file with a logged model, without training")
    _model_options(scorer)
    _data_options(scorer)

    blender = stages.add_parser("blend", help="combine finished runs by their out-of-fold predictions")
    blender.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="finished train or submit runs")
    blender.add_argument("--method", choices=blend.METHODS, default="best",
                         help="blend (simplex weights), stack (weights and an intercept) or best (default)")
    blender.add_argument("--data-dir", type=Path, default=Path(os.environ["DATA_DIR"]) if os.environ.get("DATA_DIR") else None,
                         help="folder of the default input (default data/<competition>)")
    _data_options(blender)

    server = stages.add_parser("serve", help="serve a logged model on 127.0.0.1 (mlflow models serve)")
    _model_options(server)
    server.add_argument("--port", type=int, default=5001, help="a free port, 1-65535 (default 5001)")


def _model_uri(args) -> str:
    """``--model``, else the @champion of the model ``submit`` registers for the same arguments:
    the competition's name as ``submit`` finds it (``--competition``, else the data folder's when
    ``--target``/``--id`` are given or a config has its name), through ``models_io.registered_name``."""
    if args.model_uri:
        return args.model_uri
    name = config.competition_name(args.competition, data_dir=args.data_dir,
                                   columns_given=bool(args.target or args.id_column))
    return f"models:/{models_io.registered_name(name)}@{models_io.CHAMPION}"


def _stage_predict(args) -> None:
    uri = _model_uri(args)
    rows = predict.predict(uri, output=args.output, input_path=args.input, competition=args.competition,
                           data_dir=args.data_dir, sample_path=args.sample)
    say(f"submission: {args.output} ({rows} rows) from {uri}")


def _stage_blend(args) -> None:
    done = blend.blend(args.run_ids, output=args.output, method=args.method, input_path=args.input,
                       data_dir=args.data_dir, sample_path=args.sample)
    say(f"mlflow run {done.run_id} in {tracking.tracking_uri()} (make ui to browse)")


def _stage_serve(args) -> None:
    uri = _model_uri(args)
    check_port(args.port)
    store_checks.check_model_folder(uri)  # a folder given by path: before anything runs its code
    predict.model_metadata(tracking.load_model(uri), uri, args.competition)  # there, and one of ours
    command = predict.serve_command(uri, args.port)
    say(f"serving {uri} on http://127.0.0.1:{args.port}/invocations")
    os.execv(command[0], command)


def check_port(port: int) -> None:
    """A port that ``serve`` can listen on at 127.0.0.1: in range and free, before MLflow starts."""
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: a port is 1-65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UserError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
                            "pick another (SERVE_PORT=)") from None


STAGES = {"predict": _stage_predict, "blend": _stage_blend, "serve": _stage_serve}
