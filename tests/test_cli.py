"""The CLI as a user runs it: sub-commands, one-line errors, no tracebacks."""

import json
import subprocess
import sys

import pytest


def motifpipe(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "motifpipe", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_help_lists_every_stage():
    out = motifpipe("--help")
    assert out.returncode == 0
    for stage in ("init-tracking", "generate", "fit-baseline", "transfer", "train",
                  "evaluate", "report"):
        assert stage in out.stdout


def test_generate_writes_a_dataset(tmp_path):
    task = {"generator": "nonsmooth", "n": 50, "noise": 0.1, "params": {}}
    out = motifpipe("generate", "--task", "t", "--n", "50", "--seed", "1",
                    "--params", json.dumps(task), "--out", str(tmp_path / "d.st"))
    assert out.returncode == 0, out.stderr
    from motifpipe.data import load_dataset

    assert load_dataset(tmp_path / "d.st").X.shape == (50, 2)


@pytest.mark.parametrize("args, needle", [
    (["generate", "--task", "t", "--n", "50", "--seed", "0", "--params",
      '{"generator": "nope", "n": 50}', "--out", "x.st"], "unknown generator 'nope'"),
    (["generate", "--task", "t", "--n", "50", "--seed", "0", "--params",
      '{"generator": "nonsmooth", "n": 50, "noise": -1}', "--out", "x.st"], "noise"),
    (["evaluate", "missing.json", "--out", "s.csv"], "missing.json"),
    (["transfer", "--task", "t", "--n", "5", "--seed", "0", "--baseline", "nothere.st",
      "--data", "d.st", "--params", '{"kind": "rbf", "max_rel_error": 1e-4}',
      "--tracking", "nothere.json", "--out-net", "n.st", "--out-json", "t.json"],
     "nothere.json"),
])
def test_user_errors_are_one_line(tmp_path, args, needle):
    out = motifpipe(*args, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "x.st").exists()


def test_malformed_json_param_is_rejected():
    out = motifpipe("generate", "--task", "t", "--n", "5", "--seed", "0",
                    "--params", "{not json", "--out", "x")
    assert out.returncode == 2 and "not valid JSON" in out.stderr
