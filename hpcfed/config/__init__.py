"""Typed run configuration: YAML in, validated dataclasses out, dotted overrides in between; each value knows
where it came from (a default, the method's reference recipe, the config file, an override)."""

from hpcfed.config.resolve import RECIPE_KEYS, Resolved, load_config, parse_config, resolve_file
from hpcfed.config.schema import (
    Config,
    DataConfig,
    MethodConfig,
    ModelConfig,
    PartitionConfig,
    RuntimeConfig,
    TrainConfig,
)

__all__ = [
    "RECIPE_KEYS",
    "Config",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "PartitionConfig",
    "RuntimeConfig",
    "Resolved",
    "TrainConfig",
    "load_config",
    "parse_config",
    "resolve_file",
]
