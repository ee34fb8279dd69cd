"""Typed run configuration: YAML in, validated dataclasses out, dotted overrides in between."""

from hpcfed.config.schema import (
    Config,
    DataConfig,
    MethodConfig,
    ModelConfig,
    PartitionConfig,
    RuntimeConfig,
    TrainConfig,
    load_config,
    parse_config,
)

__all__ = [
    "Config",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "PartitionConfig",
    "RuntimeConfig",
    "TrainConfig",
    "load_config",
    "parse_config",
]
