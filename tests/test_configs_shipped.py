"""The published settings in configs/ load, and split as their protocol says on data of the right layout."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.config import load_config
from hpcfed.errors import ConfigError
from hpcfed.results import open_run

from conftest import REPO, make_image_tree

CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_every_shipped_config_is_valid(path):
    # Real CLIP weights live only on clusters; everything else is checked as it stands.
    cfg = load_config(path, ["model.pretrained=null"])
    assert cfg.clients >= 1 and cfg.rounds >= 1


def test_base2novel_configs_follow_the_pfedmma_protocol():
    cfg = load_config(REPO / "configs/base2novel/oxford_flowers.yaml", ["model.pretrained=null"])
    assert (cfg.data.dataset, cfg.clients, cfg.partition.shots) == ("oxford_flowers", 10, 16)
    assert cfg.partition.scheme == "disjoint_classes" and cfg.partition.base_novel


def test_base_files_overlay_and_loops_are_refused(tmp_path):
    (tmp_path / "common.yaml").write_text("rounds: 7\ntrain: {lr: 0.5, batch_size: 4}\n")
    (tmp_path / "child.yaml").write_text("base: common.yaml\ntrain: {lr: 0.1}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.rounds, cfg.train.lr, cfg.train.batch_size) == (7, 0.1, 4)
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


def test_office_home_config_spreads_ten_clients_over_four_domains(tmp_path):
    root = make_image_tree(tmp_path / "OfficeHomeDataset_10072016", domains=("Art", "Clipart", "Product", "Real World"),
                           classes=("Alarm_Clock", "Backpack", "Batteries"), per_class=14)
    for extra in sorted((root / "Art").rglob("*.png"))[:20]:  # Art is the smallest domain, as in Office-Home
        extra.unlink()
    out = tmp_path / "oh.h5"
    result = CliRunner().invoke(main, ["split", str(REPO / "configs/office_home.yaml"), "-o", f"data.root={root}",
                                       "-o", "model.pretrained=null", "-o", f"output={out}"])
    assert result.exit_code == 0, result.output
    with open_run(out) as f:
        domains = f["splits/client_domain"][:]
        names = [n.decode() for n in f["splits/domain_names"][:]]
    assert len(domains) == 10 and names == ["Art", "Clipart", "Product", "Real World"]
    per_domain = np.bincount(domains, minlength=4)
    assert per_domain.min() >= 1 and per_domain[0] == per_domain.min()  # the smallest domain gets fewest clients
    assert Path(out).exists()
