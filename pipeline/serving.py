"""``make serve``: MLflow's scoring server for one logged model, on 127.0.0.1, with one change:
a request that lacks some of the model's columns gets one line naming them (MLflow's own answer
dumps the whole schema and the data). Run as ``python -m pipeline.serving URI PORT``."""

from __future__ import annotations

import json
import sys

import uvicorn
from fastapi import Request
from fastapi.responses import JSONResponse

from pipeline import tracking


def columns_sent(body: bytes) -> list[str] | None:
    """The column names a JSON request body names (``dataframe_split``, ``dataframe_records``, or
    ``inputs``/``instances`` as records); ``None`` where it names none, for MLflow to judge."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(parsed, dict):
        return None
    if isinstance(split := parsed.get("dataframe_split"), dict) and isinstance(split.get("columns"), list):
        return [str(c) for c in split["columns"]]
    records = parsed.get("dataframe_records", parsed.get("inputs", parsed.get("instances")))
    if isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
        return sorted({str(k) for r in records for k in r})
    return None


def missing_columns(expected: list[str], body: bytes) -> str | None:
    """One line naming the model's columns a request lacks, or ``None``."""
    sent = columns_sent(body)
    if sent is None:
        return None
    missing = [c for c in expected if c not in set(sent)]
    if not missing:
        return None
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    return f"missing columns: {shown} ({len(missing)} of the {len(expected)} the model takes)"


def app_for(uri: str):
    app, expected = tracking.scoring_app(uri)

    @app.middleware("http")
    async def name_missing_columns(request: Request, call_next):
        if request.method == "POST" and request.url.path == "/invocations" and "json" in (
                request.headers.get("content-type") or ""):
            said = missing_columns(expected, await request.body())
            if said is not None:
                return JSONResponse({"error_code": "BAD_REQUEST", "message": said}, status_code=400)
        return await call_next(request)

    return app


def main(argv: list[str]) -> None:
    uri, port = argv
    uvicorn.run(app_for(uri), host="127.0.0.1", port=int(port), workers=1, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
