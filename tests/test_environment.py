"""environment.yml and pyproject.toml must pin the same versions."""

import re
import tomllib

import yaml

from conftest import ROOT


def _pins(lines):
    out = {}
    for line in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line.strip())
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_conda_env_matches_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    for env_file in ("environment.yml", "workflow/envs/motifpipe.yaml"):
        env = yaml.safe_load((ROOT / env_file).read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        _check(declared, _pins(pip))


def _check(declared, conda):
    assert declared, "pyproject declares no pins"
    for name, version in declared.items():
        assert conda.get(name) == version, f"{name}: pyproject {version}, conda {conda.get(name)}"
    makefile = (ROOT / "Makefile").read_text()
    # The Makefile's torch pin is the one both environments use.
    torch_pin = re.search(r"TORCH_REQ \?= torch==(\S+)", makefile).group(1)
    assert conda["torch"] == torch_pin
