"""`make lint`'s three checks stay green: ruff, snakefmt --check, snakemake --lint."""

import subprocess

import pytest

from conftest import ROOT


@pytest.mark.parametrize("cmd", [
    ["ruff", "check", "src", "tests", "bench"],
    ["snakefmt", "--check", "Snakefile", "workflow/rules"],
    ["snakemake", "--lint", "--configfile", "config/smoke.yaml"],
])
def test_lint_is_clean(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
