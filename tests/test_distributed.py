"""The image stage on two CPU processes under torchrun (gloo), and the command that launches it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, mlflow_runs
from test_image_pipeline import write_config, write_digit_folder

from pipeline import cli

N_TRAIN, N_TEST = 100, 20  # holdout 0.1: 90 rows for the validation fit, 100 for the refit


def torchrun(*args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_ranks(module_workdir):
    folder, _ = module_workdir
    data = write_digit_folder(folder / "tiny", n_train=N_TRAIN, n_test=N_TEST)
    config = write_config(folder, "holdout = 0.1", model="lenet_bn", params="epochs = 2\nbatch_size = 16")
    done = torchrun(str(REPO / "tests" / "ddp_probe.py"), str(folder / "probe"), "submit", "--config",
                    str(config), "--data-dir", str(data), "-o", "submission.csv", cwd=folder)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(folder / "probe" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return folder, done, ranks


@pytest.mark.slow
def test_one_mlflow_run_and_one_submission(two_ranks):
    folder, done, _ = two_ranks
    [run] = mlflow_runs("tiny-digits")
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "submit" and run.data.params["params.epochs"] == "2"
    assert {"cv_accuracy", "refit_train_loss", "val_accuracy"} <= run.data.metrics.keys()
    assert [p.name for p in folder.glob("submission*.csv")] == ["submission.csv"]
    submission = pd.read_csv(folder / "submission.csv")
    assert submission["ImageId"].tolist() == list(range(1, N_TEST + 1))
    assert done.stdout.count("submission: submission.csv") == 1  # rank 0 speaks for both
    assert not (folder / ".checkpoints").exists()  # logged to the run, then removed


@pytest.mark.slow
def test_shards_are_disjoint_and_cover_every_epoch(two_ranks):
    *_, ranks = two_ranks
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["code"] for r in ranks] == [0, 0]
    assert ranks[0]["rows"] == ranks[1]["rows"] == [90, 100]  # the holdout fit, then the refit
    for fit, rows in enumerate(ranks[0]["rows"]):
        epochs = [r["shards"][fit] for r in ranks]
        assert len(epochs[0]) == len(epochs[1]) == 2
        for epoch in range(2):
            mine, theirs = (set(shards[epoch]) for shards in epochs)
            assert len(mine) == len(theirs) == rows // 2
            assert not mine & theirs
            assert mine | theirs == set(range(rows))
        assert epochs[0][0] != epochs[0][1]  # a new permutation each epoch


@pytest.mark.slow
def test_both_ranks_end_with_the_same_weights(two_ranks):
    *_, ranks = two_ranks
    for state0, state1 in zip(ranks[0]["states"], ranks[1]["states"], strict=True):
        assert state0.keys() == state1.keys()
        for key in state0:  # batch-norm running statistics included
            torch.testing.assert_close(state0[key], state1[key], rtol=0, atol=0, msg=key)


def test_torchrun_command_keeps_the_stage_and_drops_the_launch_options():
    argv = ["submit", "-c", "digit-recognizer", "--nproc", "2", "--nnodes=1", "-p", "epochs=3"]
    args = cli.build_parser().parse_args(argv)
    command = cli.torchrun_command(args, argv)
    assert command[:4] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node"]
    assert "--standalone" in command
    assert command[command.index("pipeline") - 1:] == ["-m", "pipeline", "submit", "-c", "digit-recognizer",
                                                         "-p", "epochs=3"]
    argv = ["train", "--nproc", "4", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1"]
    command = cli.torchrun_command(cli.build_parser().parse_args(argv), argv)
    joined = " ".join(command)
    assert "--nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 29500" in joined
    assert "--standalone" not in command and joined.endswith("-m pipeline train")


def test_several_machines_need_the_address_of_the_first(workdir):
    from conftest import run_cli

    result = run_cli("train", "-c", "digit-recognizer", "--nnodes", "2")
    assert result.code == cli.EXIT_USER_ERROR
    assert "--master-addr" in result.err


@pytest.mark.slow
def test_make_submit_nproc_2_runs_the_cli_under_torchrun(workdir):
    """The user's path: ``--nproc 2`` re-executes the command under torchrun."""
    data = write_digit_folder(workdir / "tiny", n_train=N_TRAIN, n_test=N_TEST)
    config = write_config(workdir, "holdout = 0.1", model="lenet", params="epochs = 2\nbatch_size = 16")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pipeline", "submit", "--config", str(config), "--data-dir",
                           str(data), "-o", "out.csv", "--nproc", "2"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    [run] = mlflow_runs("tiny-digits")
    assert run.data.tags["world_size"] == "2"
    assert len(pd.read_csv(workdir / "out.csv")) == N_TEST
    assert np.isfinite(run.data.metrics["refit_train_loss"])
