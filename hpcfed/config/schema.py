"""The run configuration. Every key is declared with its type and allowed values (the partition section next to
the partitioners, in hpcfed.split, and each method's options in its module); anything else is an error."""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcfed.errors import ConfigError
from hpcfed.options import option
from hpcfed.split.base import PartitionConfig
from hpcfed.update.dropout import DropoutConfig
from hpcfed.update.privacy import PrivacyConfig
from hpcfed.update.secagg import SecureAggregationConfig
from hpcfed.update.server_opt import ServerConfig

# Keys added after run files and checkpoints were first written, each with the value that means "as before it
# existed" (a new key always defaults to the old behaviour). At that value a key is left out of the split hash and
# the experiment digest, so the split file and checkpoints of a run made by an earlier hpcfed still match.
ADDED_LATER = {"partition.holdout_clients": 0, "partition.holdout_domain": None, "train.holdout_steps": 0,
               "train.eval_clients": 0}


def without_added_defaults(tree: dict) -> dict:
    """A copy of a config dict (sections of it may be absent) without the ADDED_LATER keys at their old value."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items()}
    for dotted, old in ADDED_LATER.items():
        section, key = dotted.split(".")
        if section in out and out[section].get(key, old) == old:
            out[section].pop(key, None)
    return out


@dataclass
class ModelConfig:
    name: str = "hpcfed-tiny"  # open_clip architecture, or one shipped in hpcfed/models/configs
    pretrained: str | None = None  # open_clip tag (local cache only), a checkpoint file, or null (random init)


@dataclass
class DataConfig:
    dataset: str = "emoji_domains"
    root: str | None = None  # null: the set-up cache for offline datasets
    domains: list[str] | None = None  # null: every domain found
    class_names_file: str | None = None
    prompt: str = "a photo of a {}."  # text template; {} is the class name
    cache_images: bool = True  # keep decoded, resized images in memory on each rank
    invert: bool = False  # light-on-dark images (MNIST-like) to dark-on-white, as the tiny CLIP was trained


@dataclass
class MethodConfig:
    name: str = "pfedmma"
    options: dict[str, Any] = field(default_factory=dict)  # method-specific keys, validated by the method


@dataclass
class TrainConfig:
    local_epochs: int = option(1, ge=1, fix="set it to >= 1")
    batch_size: int = option(32, ge=1, fix="set it to >= 1")
    eval_batch_size: int = option(128, ge=1, fix="set it to >= 1")
    optimizer: str = option("sgd", choices=("sgd", "adam", "adamw"))
    lr: float = option(0.001, gt=0, fix="use e.g. lr: 0.001")
    momentum: float = option(0.9, ge=0, lt=1, fix="use e.g. 0.9")
    weight_decay: float = option(5e-4, ge=0, fix="use e.g. 5e-4")
    # FedProx: mu/2 * ||shared - global||^2 added to the local loss (0: off)
    prox_mu: float = option(0.0, ge=0, fix="0 turns FedProx off; e.g. 0.01 pulls shared parameters toward the "
                            "global state")
    reset_optimizer: bool = False  # a fresh optimizer per client per round instead of persistent state
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    # fp32; amp: the reference's fp16 autocast + GradScaler in training, evaluation in fp32 (methods.md §1.2);
    # bf16: bf16 autocast in training and evaluation (no scaler)
    precision: str = option("fp32", choices=("fp32", "amp", "bf16"))
    # RandomResizedCrop + horizontal flip of the training images (methods.md §1.2): fresh crops every epoch, or
    # with augment_views K, K fixed views per image (what the feature cache can hold)
    augment: bool = False
    # 0: fresh crops every epoch (no feature cache); K: K fixed views per image, one picked per epoch
    augment_views: int = option(0, ge=0, le=256, fix="0 draws fresh crops every epoch; e.g. 8 gives each training "
                                "image 8 fixed augmented views (the feature cache needs K > 0)")
    # a held-out client (partition.holdout_clients) is also scored after this many local steps (batches) on its
    # own train split, from a fresh optimizer; the adapted copy is discarded (0: scored only as it comes)
    holdout_steps: int = option(0, ge=0, fix="use 0 to score held-out clients only as they come, or e.g. 20 "
                                "local steps")
    # evaluation rounds before the last score only this many clients, drawn per round from the seed; the last
    # round scores every client and is what model selection uses (README, "Evaluation of many clients"); 0: all
    eval_clients: int = option(0, ge=0, fix="use 0 to evaluate every client at every evaluation round, or e.g. 50 "
                               "to score 50 sampled clients until the last round")


@dataclass
class ExtractConfig:
    enabled: bool = False  # train from the cached frozen prefix of the image tower (hpcfed extract; made if missing)
    dir: str = "cache"  # cache files are named by their key inside this directory
    dtype: str = option("float16", choices=("float16", "float32"))  # float32: exact features, twice the size


@dataclass
class RuntimeConfig:
    device: str = option("auto", choices=("auto", "cpu", "cuda"))  # auto: one GPU per client rank when present
    threads: int = option(1, ge=1, fix="use 1 per rank")  # torch/OpenMP threads per rank
    # seconds between tests of a pending collective (0: block and spin inside MPI)
    poll_interval: float = option(0.001, ge=0, fix="use 0.001 on shared or oversubscribed nodes, 0 on dedicated "
                                  "cores")
    # rounds between checkpoints (0: none on the way); one is always written after the last round (to extend the
    # run with more rounds) and when a signal asks for one
    checkpoint_every: int = option(5, ge=0, fix="use 0 to checkpoint only on a signal and at the end, or k for "
                                   "every k rounds")
    # newest checkpoints kept; an older one is the fallback if the newest is damaged
    checkpoint_keep: int = option(2, ge=1, fix="keep at least 1 (2 leaves a fallback if the newest is damaged)")
    cuda_aware_mpi: bool = False  # Allreduce straight from GPU memory (needs a CUDA-aware MPI); else pinned staging


@dataclass
class Config:
    name: str = "run"
    seed: int = option(0, ge=0, fix="use any integer >= 0 (0 is a real seed)")
    rounds: int = option(10, ge=1, fix="set rounds to a positive integer")
    clients: int = option(4, ge=1, fix="set clients to a positive integer")
    # fraction of clients sampled per round (round 0 takes all)
    participation: float = option(1.0, gt=0, le=1, fix="use e.g. participation: 0.1 for 10% of clients per "
                                  "round, 1.0 for all")
    eval_every: int = option(1, ge=1, fix="evaluate every k >= 1 rounds")
    # CLIP zero-shot on every client's splits before training (/final/zeroshot): what personalization bought
    eval_zero_shot: bool = True
    output: str = "runs/{name}_seed{seed}.h5"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    # the shared update (hpcfed.update): server optimizer, privacy, secure aggregation, dropouts
    server: ServerConfig = field(default_factory=ServerConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secure_aggregation: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def trained_clients(self) -> int:
        """The clients sampling draws from: all but the held-out ones (participation is a share of these)."""
        return self.clients - self.partition.holdout_clients

    @property
    def output_path(self) -> Path:
        return Path(self.output.format(name=self.name, seed=self.seed))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:16]

    def experiment(self) -> dict[str, Any]:
        """Everything that can change the results: the runtime section (threads, polling, checkpointing) and the
        output path are left out, so a run may move and resume with other settings; `rounds` too, since no round
        depends on the total (constant lr, no schedule), so a run may be extended. Checkpoints store it to name
        the keys a refused resume differs in."""
        d = without_added_defaults(self.to_dict())
        d.pop("runtime"), d.pop("output"), d.pop("rounds")
        return d

    def experiment_digest(self) -> str:
        return hashlib.sha256(yaml.safe_dump(self.experiment(), sort_keys=False).encode()).hexdigest()[:16]


# ---- parsing --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are declared."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}", "write it as a YAML list, e.g. [a, b]")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}", "write it as a YAML mapping")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any or (isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}",
                      f"give '{key}' a value of type {_type_name(tp)}")


def section(key: str, value: Any, where: str = "") -> dict[str, Any]:
    """The mapping of the section `key`. A null one (every key under it commented out) is refused rather than
    read as the defaults: an empty `model:` would otherwise train a random-init model without a word."""
    leaf = key.rsplit(".", 1)[-1]
    if value is None:
        raise ConfigError(key, f"the section is empty{where} (nothing under '{leaf}:', e.g. every key commented "
                          "out, which YAML reads as null)",
                          f"give '{key}' its keys, or delete the '{leaf}:' line to use the defaults")
    if not isinstance(value, dict):
        raise ConfigError(key, f"a section must be a mapping of keys, got {value!r}{where}",
                          f"write its keys indented under '{leaf}:', or delete the line to use the defaults")
    return value


def check_sections(tree: dict[str, Any], where: str = "", cls: type | None = None, prefix: str = "") -> None:
    """Every section of `tree` (at any depth of the schema) is a non-empty mapping; `method` may be a name."""
    for name, tp in typing.get_type_hints(cls or Config).items():
        value = tree.get(name)
        if name in tree and dataclasses.is_dataclass(tp) and not (name == "method" and isinstance(value, str)):
            check_sections(section(f"{prefix}{name}", value, where), where, tp, f"{prefix}{name}.")


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip(".") or "<top>", f"expected a mapping, got {raw!r}", "use key: value lines")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            close = [n for n in names if n.startswith(str(key)[:3])]
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{prefix}{key}", "unknown key", f"{hint}known keys here: {sorted(names)}")
    kwargs = {}
    for name in names & raw.keys():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, section(f"{prefix}{name}", raw[name]), f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", raw[name], tp)
    return cls(**kwargs)
