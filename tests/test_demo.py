"""The embedded default (configs/demo.yaml) runs under mpiexec on the Emoji-Domains data built by set-up."""

import h5py
import numpy as np
import pytest

from hpcfed.data.built import data_cache_dir

from conftest import HPCFED, REPO, run_mpi

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(not (data_cache_dir() / "emoji_domains" / ".complete").exists(),
                       reason="Emoji-Domains not built: `make test` builds it first"),
]


def test_demo_config_runs_and_accounts_communication_exactly(tmp_path):
    out = tmp_path / "demo.h5"
    done = run_mpi(3, [str(HPCFED), "train", str(REPO / "configs/demo.yaml"), "-o", "rounds=1",
                       "-o", f"output={out}"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(out, "r") as f:
        participants = f["metrics/global/participants"][:]
        assert list(participants) == [8]  # participation 1.0
        # pFedMMA on hpcfed-tiny: 3 adapted levels x Linear(32, 32) = 3 x 1,056 shared parameters.
        n_shared = 3 * (32 * 32 + 32)
        np.testing.assert_array_equal(f["comm/bytes"][:], 4 * n_shared * participants)
        assert len(f["splits/domain_names"]) == 4 and len(f["splits/class_names"]) == 20
        assert np.isfinite(f["metrics/client/test_accuracy"][:]).all()
        assert len(f["splits/base_classes"][:]) == 10 and np.isfinite(f["final/zeroshot/novel_accuracy"][:]).all()
    assert "zero-shot" in done.stdout and "round 1" in done.stdout and "last (r1)" in done.stdout
    assert "Local    Base   Novel      HM" in done.stdout
