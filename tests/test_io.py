import hashlib

import numpy as np
import pytest

from motifpipe.errors import MotifpipeError
from motifpipe.io import atomic_path, load_arrays, save_arrays


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    assert target.stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600


def test_arrays_roundtrip_and_bytes_are_deterministic(tmp_path):
    arrays = {"X": np.arange(12.0).reshape(4, 3), "split": np.array([0, 1, 2, 0], np.int8)}
    meta = {"seed": 3, "name": "t"}
    digests = []
    for name in ("a.st", "b.st"):
        save_arrays(tmp_path / name, arrays, meta)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    back, meta_back = load_arrays(tmp_path / "a.st")
    np.testing.assert_array_equal(back["X"], arrays["X"])
    assert back["split"].dtype == np.int8
    assert meta_back == meta


def test_unreadable_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.st"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(MotifpipeError, match="bad.st"):
        load_arrays(bad)
