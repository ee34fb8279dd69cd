"""The published settings in configs/ load, and split as their protocol says on data of the right layout."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.config import RECIPE_KEYS, load_config, resolve_file
from hpcfed.config.resolve import read_yaml_tree
from hpcfed.errors import ConfigError
from hpcfed.methods import METHODS
from hpcfed.results import open_run

from conftest import HPCFED, REPO, make_image_tree, run_mpi

CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_every_shipped_config_is_valid(path):
    # Real CLIP weights live only on clusters; everything else is checked as it stands.
    cfg = load_config(path, ["model.pretrained=null"])
    assert cfg.clients >= 1 and cfg.rounds >= 1


# A protocol may fix the local epochs of every method (the FL protocol's budget); the rest is the method's recipe.
OPTIMIZER_KEYS = set(RECIPE_KEYS) - {"local_epochs"}


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_every_method_runs_on_every_shipped_config_by_switching_only_its_name(path):
    tuned = read_yaml_tree(path).get("recipes") or {}  # a protocol's tuning of one method binds that method only
    for name in METHODS.names():
        cfg = load_config(path, ["model.pretrained=null", f"method.name={name}"])
        recipe = {**METHODS[name].reference_recipe(cfg.method.options, cfg.partition.shots), **tuned.get(name, {})}
        assert cfg.method.name == name
        for key in OPTIMIZER_KEYS & set(recipe):
            assert getattr(cfg.train, key) == recipe[key], (name, key)  # its own recipe, not another method's


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_shipped_configs_carry_no_method_options_and_no_optimizer_recipe(path):
    tree = read_yaml_tree(path)
    method = tree.get("method") or {}
    assert set(method) <= {"name"} if isinstance(method, dict) else isinstance(method, str)
    assert not OPTIMIZER_KEYS & set(tree.get("train") or {}), "an optimizer recipe in a protocol config"
    assert set(tree.get("recipes") or {}) <= set(METHODS)  # per-method tuning is allowed: it binds only that method


def test_print_config_names_where_each_train_value_came_from():
    result = CliRunner().invoke(main, ["train", str(REPO / "configs/base2novel/dtd.yaml"), "-o", "method.name=plora",
                                       "-o", "train.local_epochs=3", "--print-config"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.output.splitlines() if line.strip()}
    assert rows["train.optimizer"][0] == "adamw" and rows["train.optimizer"][1].startswith("recipe of plora")
    assert rows["train.lr"][0] == "0.0002" and "CLIP-LoRA" in rows["train.lr"][1]
    assert rows["train.local_epochs"] == ["3", "-o override"]
    assert rows["partition.shots"] == ["16", str(REPO / "configs/base2novel/_base.yaml")]
    assert rows["data.dataset"] == ["dtd", str(REPO / "configs/base2novel/dtd.yaml")]
    assert rows["method.rank"] == ["2", "default of plora"]
    assert rows["train.prox_mu"] == ["0.0", "default"]
    assert "would stop here" in result.output and "model.pretrained" in result.output  # no ViT-B-16 weights here


def test_a_config_value_beats_the_recipe_and_an_override_beats_both(tmp_path):
    (tmp_path / "p.yaml").write_text("method: {name: fedpgp}\npartition: {shots: 4}\ntrain: {lr: 0.5}\n"
                                     "recipes: {fedpgp: {momentum: 0.5}, plora: {lr: 0.3}}\n")
    resolved = resolve_file(tmp_path / "p.yaml", ["recipes.fedpgp.weight_decay=0.1"])
    t = resolved.config.train
    assert (t.lr, t.momentum, t.weight_decay) == (0.5, 0.5, 0.1)  # file, file's recipes.fedpgp, override
    assert (t.optimizer, t.batch_size, t.local_epochs) == ("sgd", 4, 2)  # FedPGP's recipe: batch = #shots
    assert resolved.sources["train.batch_size"].startswith("recipe of fedpgp")
    other = load_config(tmp_path / "p.yaml", ["method.name=plora", "train.lr=0.7"])
    assert (other.train.lr, other.train.optimizer, other.train.momentum) == (0.7, "adamw", 0.9)  # fedpgp's stay out
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "p.yaml", ["recipes.fedpgp.lrr=1"])
    assert err.value.key == "recipes.fedpgp.lrr"


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


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["plora"])  # every method x config is validated above; one run end to end
def test_a_published_config_trains_another_method_by_switching_only_its_name(tmp_path, method):
    """configs/compare.yaml names pfedmma; one round of another method under mpiexec, at that method's recipe."""
    out = tmp_path / f"{method}.h5"
    done = run_mpi(2, [str(HPCFED), "train", str(REPO / "configs/compare.yaml"), "-o", f"method.name={method}",
                       "-o", "rounds=1", "-o", "eval_zero_shot=false", "-o", f"output={out}"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = load_config(REPO / "configs/compare.yaml", [f"method.name={method}"]).train
    with h5py.File(out, "r") as f:
        stored = yaml_config(f)
        assert f["status"][()].decode() == "finished" and np.isfinite(f["final/last/test_accuracy"][:]).all()
    assert stored["method"]["name"] == method
    assert (stored["train"]["optimizer"], stored["train"]["lr"]) == (expected.optimizer, expected.lr)
    assert (expected.optimizer, expected.lr) == {"plora": ("adamw", 2e-4), "fedclip": ("adam", 5e-5)}[method]


def yaml_config(f) -> dict:
    import yaml

    return yaml.safe_load(f["config"].asstr()[()])
