"""The command line of the stages that reuse logged models: ``predict``, ``blend`` and ``serve``.

``pipeline.cli`` adds these parsers and stages beside its own (``add_parsers``, ``STAGES``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline import blend, config, models_io, predict, tracking
from pipeline.console import say

MODEL_HELP = "models:/<competition>@champion, models:/<competition>/<version> or runs:/<run id>/model"


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", dest="model_uri", help=MODEL_HELP + " (default: the competition's @champion)")
    parser.add_argument("--competition", "-c", default=os.environ.get("COMPETITION") or None,
                        help="refuse a model of any other competition (default: the model's own)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ["DATA_DIR"]) if os.environ.get("DATA_DIR") else None,
                        help="folder of the default input (default data/<competition>)")


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
    server.add_argument("--port", type=int, default=5001)


def _model_uri(args) -> str:
    """``--model``, else the @champion of the competition (``--competition``, else the data folder's name)."""
    if args.model_uri:
        return args.model_uri
    return f"models:/{config.competition_name(args.competition, data_dir=args.data_dir)}@{models_io.CHAMPION}"


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
    command = predict.serve_command(uri, args.port)
    say(f"serving {uri} on http://127.0.0.1:{args.port}/invocations")
    os.execv(command[0], command)


STAGES = {"predict": _stage_predict, "blend": _stage_blend, "serve": _stage_serve}
