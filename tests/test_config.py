"""Config: typed parsing, dotted overrides, and one clear error naming the key for every bad input."""

import pytest
import yaml
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.config import load_config, parse_config
from hpcfed.config.validate import validate_launch
from hpcfed.errors import ConfigError


def test_defaults_parse_and_round_trip_through_yaml():
    cfg = parse_config({"rounds": 3, "method": {"name": "pfedmma", "alpha": 0.01}})
    again = parse_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert again.digest() == cfg.digest()


def test_overrides_are_typed_and_reach_nested_and_method_keys():
    cfg = parse_config({}, ["rounds=5", "seed=0", "train.lr=0.1", "method.adapter_dim=16",
                            "data.domains=[noto, twemoji]", "participation=1"])
    assert cfg.rounds == 5 and cfg.seed == 0
    assert cfg.train.lr == 0.1
    assert cfg.method.options["adapter_dim"] == 16
    assert cfg.data.domains == ["noto", "twemoji"]
    assert isinstance(cfg.participation, float)


def test_method_options_default_from_the_method():
    cfg = parse_config({"method": "pfedmma"})
    assert cfg.method.options == {"adapter_dim": 32, "adapter_start": None, "alpha": 0.001}


def test_seed_zero_is_a_real_seed():
    assert parse_config({"seed": 0}).seed == 0


BAD = [
    ({"roundz": 3}, [], "roundz"),
    ({"rounds": "ten"}, [], "rounds"),
    ({"rounds": 0}, [], "rounds"),
    ({"participation": 1.5}, [], "participation"),
    ({"participation": 0}, [], "participation"),
    ({"method": {"name": "fedmagic"}}, [], "method.name"),
    ({"model": {"name": "ViT-Q-99"}}, [], "model.name"),
    ({"method": {"name": "pfedmma", "alpah": 0.1}}, [], "method.alpah"),
    ({"method": {"name": "pfedmma", "alpha": "big"}}, [], "method.alpha"),
    ({"method": {"name": "pfedmma", "alpha": -1}}, [], "method.alpha"),
    ({"method": {"name": "pfedmma", "adapter_start": 0}}, [], "method.adapter_start"),
    ({"train": {"lrr": 0.1}}, [], "train.lrr"),
    ({"train": {"batch_size": 0}}, [], "train.batch_size"),
    ({"clients": True}, [], "clients"),
    ({"data": {"dataset": "imagenet-21k"}}, [], "data.dataset"),
    ({"data": {"prompt": "a photo"}}, [], "data.prompt"),
    ({"partition": {"scheme": "by-vibes"}}, [], "partition.scheme"),
    ({"partition": {"val_fraction": 0.5, "test_fraction": 0.5}}, [], "partition.test_fraction"),
    ({"model": {"pretrained": "no-such-tag"}}, [], "model.pretrained"),
    ({}, ["rounds"], "rounds"),
    ({}, ["train.nope=1"], "train.nope"),
]


@pytest.mark.parametrize("tree,overrides,key", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_config_names_the_key(tree, overrides, key):
    with pytest.raises(ConfigError) as err:
        parse_config(tree, overrides)
    assert err.value.key == key
    assert f"'{key}'" in str(err.value) and "Fix:" in str(err.value)


def test_missing_cached_weight_says_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(ConfigError) as err:
        parse_config({"model": {"name": "ViT-B-16", "pretrained": "openai"}})
    assert err.value.key == "model.pretrained"
    assert "login node" in str(err.value) and "HF_HUB_OFFLINE=1" in str(err.value)


def test_fewer_clients_than_client_ranks_is_refused():
    cfg = parse_config({"clients": 4})
    validate_launch(cfg, world_size=5)  # 4 client ranks: fine
    with pytest.raises(ConfigError) as err:
        validate_launch(cfg, world_size=6)
    assert err.value.key == "clients" and "mpiexec -n 5" in str(err.value)


def test_singleton_inside_multitask_slurm_job_is_refused(monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "4")
    with pytest.raises(ConfigError) as err:
        validate_launch(parse_config({}), world_size=1)
    assert err.value.key == "launch" and "singleton" in str(err.value)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1,\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "YAML" in str(err.value)


def test_cli_help_lists_train_and_documents_overrides():
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "train" in top.output
    sub = runner.invoke(main, ["train", "--help"])
    assert sub.exit_code == 0 and "-o, --override KEY=VALUE" in sub.output and "rounds=5" in sub.output


def test_cli_bad_config_exits_2_with_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rounds: 0\n")
    result = CliRunner().invoke(main, ["train", str(cfg)])
    assert result.exit_code == 2
    assert "'rounds'" in result.output


def test_python_m_hpcfed_cli_runs_the_command_instead_of_exiting_silently():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hpcfed.cli", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "train" in done.stdout, done.stderr


def test_the_experiment_digest_ignores_rounds_so_a_run_can_be_extended():
    five, ten = parse_config({"rounds": 5}), parse_config({"rounds": 10})
    assert five.experiment_digest() == ten.experiment_digest()
    assert five.digest() != ten.digest()  # the full config hash (/config attrs) still tells them apart


def test_the_experiment_digest_still_changes_with_what_changes_a_round():
    base = parse_config({"rounds": 5}).experiment_digest()
    for overrides in (["seed=1"], ["train.lr=0.1"], ["participation=0.5"], ["eval_every=2"], ["method.alpha=0.01"]):
        assert parse_config({"rounds": 5}, overrides).experiment_digest() != base, overrides


def test_the_experiment_digest_ignores_where_and_how_the_run_is_executed():
    base = parse_config({}).experiment_digest()
    assert parse_config({}, ["output=elsewhere.h5", "runtime.threads=4", "runtime.checkpoint_every=1"]
                        ).experiment_digest() == base
