"""Untrusted pickles: data loads, code does not run."""

import gzip
import os
import pickle

import numpy as np
import pytest

from hpcfed.data.safe_pickle import load_restricted
from hpcfed.errors import DataError


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_numpy_arrays_and_containers_load(tmp_path):
    data = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "name": b"batch"}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(data, protocol=2))
    loaded = load_restricted(path)
    assert np.array_equal(loaded["data"], data["data"]) and loaded["labels"] == [1, 2, 3]
    gz = tmp_path / "arr.gz"
    gz.write_bytes(gzip.compress(pickle.dumps(np.ones((2, 2), dtype=np.float32))))
    assert load_restricted(gz).sum() == 4


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"data": RunsCode()}))
    with pytest.raises(DataError, match="refused to load posix.system|refused to load os.system"):
        load_restricted(path)
    assert not (tmp_path / "pwned_by_pickle").exists()


def test_truncated_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(list(range(1000)))[:50])
    with pytest.raises(DataError, match="not a readable pickle"):
        load_restricted(path)
