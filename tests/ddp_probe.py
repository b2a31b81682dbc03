"""``torchrun ... tests/ddp_probe.py OUT CLI-ARGS``: ``python -m pipeline CLI-ARGS`` on one rank,
recording for tests/test_distributed.py what the rank trained on and what it ended with.

Writes ``OUT/rank<r>.pt``: the indices of every epoch's shard (``shards[fit][epoch]``), the rows
each fit trained on, and each fitted model's final ``state_dict`` (parameters and buffers).
Nothing else is changed: the stage runs as the CLI runs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import distributed  # noqa: E402
from models.image import ImageClassifier  # noqa: E402
from pipeline.cli import main  # noqa: E402

record: dict = {"shards": [], "rows": [], "states": []}
_epoch_shard, _fit = distributed.epoch_shard, ImageClassifier.fit


def epoch_shard(n, seed, epoch):
    indices = _epoch_shard(n, seed, epoch)
    record["shards"][-1].append(indices.tolist())
    return indices


def fit(self, X, y, *args, **kwargs):
    record["shards"].append([])
    record["rows"].append(len(y))
    result = _fit(self, X, y, *args, **kwargs)
    record["states"].append({k: v.detach().cpu().clone() for k, v in self.model_.state_dict().items()})
    return result


distributed.epoch_shard = epoch_shard
ImageClassifier.fit = fit

if __name__ == "__main__":
    out = Path(sys.argv[1])
    code = main(sys.argv[2:])
    out.mkdir(parents=True, exist_ok=True)
    torch.save({**record, "world_size": int(os.environ["WORLD_SIZE"]), "code": code},
               out / f"rank{os.environ['RANK']}.pt")
    sys.exit(code)
