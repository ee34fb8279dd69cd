"""From YAML files and `-o key=value` overrides to one validated Config, remembering where every value came from.

Layers, lowest first (a higher one wins key by key):
  1. the built-in defaults (schema.py);
  2. the method's reference recipe (optimizer, lr, batch size, local epochs... from its paper or official
     code, `Method.recipe`): switching `method.name` gives every method its own recipe;
  3. the config file (`base:` files first, then the file itself);
  4. the config file's `recipes: {<method>: {<train key>: value}}` for the method that runs (a protocol tuned
     per method without imposing one method's numbers on the others);
  5. overrides on the command line.
Shipped protocol configs set none of the recipe keys (tests/test_configs_shipped.py), so layer 2 decides them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpcfed.config.schema import Config, MethodConfig, TrainConfig, _build, check_sections, section
from hpcfed.config.strict_yaml import load_yaml
from hpcfed.errors import ConfigError
from hpcfed.options import check_options

# Train keys a method's recipe decides; a protocol config that set them would impose one method's numbers on all.
RECIPE_KEYS = ("optimizer", "lr", "momentum", "weight_decay", "adam_betas", "adam_eps", "reset_optimizer",
               "batch_size", "local_epochs")
OVERRIDE = "-o override"


@dataclass
class Resolved:
    config: Config
    sources: dict[str, str]  # dotted key (method options as method.<option>) -> where its value came from

    def table(self) -> str:
        """Every resolved key, its value and its source, one per line (`hpcfed train --print-config`)."""
        rows = [(key, yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip(),
                 self.sources.get(key, "default")) for key, value in _flatten(_display(self.config.to_dict()))]
        width = max(len(k) for k, _, _ in rows)
        value_width = min(max(len(v) for _, v, _ in rows), 40)
        return "\n".join(f"{k:<{width}}  {v:<{value_width}}  {s}" for k, v, s in rows)


def _display(tree: dict[str, Any]) -> dict[str, Any]:
    """Method options shown (and sourced) as method.<option>, as they are written in YAML and overrides."""
    tree = dict(tree)
    method = dict(tree["method"])
    tree["method"] = {"name": method["name"], **method.get("options", {})}
    return tree


def _flatten(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# ---- reading YAML ------------------------------------------------------------------------------------------


def merge_trees(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = merge_trees(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def refuse_non_finite(value: Any, key: str, where: str) -> None:
    """Refuse .inf/.nan anywhere (lists, method options, recipes), naming the key: no setting takes them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value} ({where})",
                          "write a finite number (YAML reads .inf and .nan as infinity and not-a-number)")
    if isinstance(value, dict):
        for name, item in value.items():
            refuse_non_finite(item, f"{key}.{name}" if key else str(name), where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            refuse_non_finite(item, f"{key}[{i}]", where)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(str(path), "config file not found", "pass the path of a YAML file, e.g. configs/demo.yaml")
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(str(path), f"the config file cannot be read ({e.strerror})",
                          "check the path and its permissions") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "the config file is not UTF-8 text (a binary file?)",
                          "pass the YAML config file, e.g. configs/demo.yaml") from None


def _read_mapping(path: Path) -> dict[str, Any]:
    """One file's own tree, refused when empty, not a mapping, or holding an empty section or a non-finite number."""
    text = _read_text(path)
    tree = load_yaml(text, str(path))
    if tree is None:
        what = "0 bytes" if not text.strip() else "only comments or null"
        raise ConfigError(str(path), f"the config file is empty ({what})",
                          "write the run's settings as key: value lines, e.g. start from a copy of configs/demo.yaml")
    if not isinstance(tree, dict):
        raise ConfigError(str(path), f"the config file is not a mapping of keys (it holds {tree!r:.60})",
                          "write key: value lines")
    refuse_non_finite(tree, "", f"in {path}")
    tree = _expand_switches(tree)  # per file, so that a base file's keys of the section survive the overlay
    check_sections(tree, f" in {path}")
    base = tree.get("base")
    if base is not None and not (isinstance(base, str) and base.strip()):
        raise ConfigError(f"{path}: base", f"expected the path of another YAML file, got {base!r}",
                          "write e.g. base: common.yaml (relative to this file), or delete the line")
    return tree


def read_yaml_tree(path: Path, seen: tuple[Path, ...] = (), origins: dict[str, str] | None = None) -> dict[str, Any]:
    """A config file as a tree; `base: other.yaml` (relative to the file) is read first and overlaid, so a
    family of published settings shares one file of common keys. `origins` collects dotted key -> file."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base", "the base chain loops back to this file", "remove the cycle")
    tree = _read_mapping(path)
    base = tree.pop("base", None)
    own_keys = [key for key, _ in _flatten(_lift_method_options(tree))]  # this file's keys, before the overlay
    if base is not None:
        tree = merge_trees(read_yaml_tree(path.parent / base, (*seen, path.resolve()), origins), tree)
    if origins is not None:
        origins.update(dict.fromkeys(own_keys, str(path)))
    return tree


# ---- overrides, method options, recipes ---------------------------------------------------------------------


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(dotted, f"'{part}' is not a section", "override a key inside a section")
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str], origins: dict[str, str] | None = None
                    ) -> dict[str, Any]:
    """`rounds=5`, `method.alpha=0.01`, `data.domains=[noto,twemoji]`: the value is read as YAML."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(item, "an override must look like key=value", "write e.g. -o rounds=5")
        key = key.strip()
        value = load_yaml(text, f"-o {item}", f"{key}.", show_lines=False) if text.strip() else None
        refuse_non_finite(value, key, f"set by -o {item}")
        if origins is not None:
            origins.update({k: OVERRIDE for k, _ in _flatten({key: value})} if isinstance(value, dict)
                           else {key: OVERRIDE})
        # Method options live flat under `method:` in YAML and on the command line.
        if key.startswith("method.") and key != "method.name":
            key = "method.options." + key[len("method."):]
        _set_dotted(tree, key, value)
    return tree


# Sections that may be given as a bare switch: `secure_aggregation: true` is {enabled: true}.
SWITCH_SECTIONS = ("secure_aggregation",)


def _expand_switches(tree: dict[str, Any]) -> dict[str, Any]:
    return {key: {"enabled": value} if key in SWITCH_SECTIONS and isinstance(value, bool) else value
            for key, value in tree.items()}


def _lift_method_options(tree: dict[str, Any]) -> dict[str, Any]:
    """`method: pfedmma` or `method: {name: pfedmma, alpha: 0.01}` -> {name, options}; switches expanded."""
    tree = _expand_switches(tree)
    method = tree.get("method")
    if isinstance(method, str):
        tree["method"] = {"name": method}
    elif isinstance(method, dict):
        options = dict(method.get("options") or {})
        options.update({k: v for k, v in method.items() if k not in ("name", "options")})
        tree["method"] = {"name": method.get("name", MethodConfig.name), "options": options}
    return tree


def _recipes(tree: dict[str, Any], method_names: list[str]) -> dict[str, dict[str, Any]]:
    """The config's per-method train settings, checked: known methods, known train keys."""
    recipes = section("recipes", tree.pop("recipes")) if "recipes" in tree else {}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, keys in recipes.items():
        if name not in method_names:
            raise ConfigError(f"recipes.{name}", f"unknown method {name!r}", f"choose one of {method_names}")
        for key in section(f"recipes.{name}", keys):
            if key not in train_keys:
                raise ConfigError(f"recipes.{name}.{key}", "not a train key",
                                  f"use one of the train keys: {sorted(train_keys)}")
    return recipes


# ---- putting it together ------------------------------------------------------------------------------------


def resolve(tree: dict[str, Any] | None, overrides: list[str] | None = None,
            origins: dict[str, str] | None = None, check_weights: bool = True, check_data: bool = False,
            validated: bool = True) -> Resolved:
    """The validated Config of a file tree plus overrides, and the source of every value (see the docstring).
    `check_weights=False` skips only the check that the model's weights are on this machine; `check_data` adds
    the check that the dataset's folder is (commands about to run on it); `validated=False` skips validation."""
    from hpcfed.config.validate import validate
    from hpcfed.methods import METHODS  # torch: only once a config is parsed, not for report or status

    sources = dict(origins or {})
    tree = apply_overrides(_lift_method_options(dict(tree or {})), overrides or [], sources)
    tree = _lift_method_options(tree)  # again: an override may have replaced the whole method, e.g. -o method=fedavg
    check_sections(tree)
    recipes = _recipes(tree, METHODS.names())
    name = tree.get("method", {}).get("name", MethodConfig.name)
    train = tree.setdefault("train", {})
    for key, value in recipes.get(name, {}).items():
        if sources.get(f"train.{key}") != OVERRIDE:
            train[key] = value
            sources[f"train.{key}"] = f"{sources.get(f'recipes.{name}.{key}', 'config')}: recipes.{name}"
    config = _build(Config, tree)
    method = METHODS[config.method.name]
    declared = _build(method.Options, config.method.options, "method.")
    check_options(declared, "method.")  # the recipe may depend on an option (the family of local/fedavg)
    options = dataclasses.asdict(declared)
    recipe = method.reference_recipe(options, config.partition.shots)
    where = f"recipe of {config.method.name}: {method.reference_source(options)}"
    given = set(train)
    for key, value in recipe.items():
        if key not in given:
            setattr(config.train, key, value)
            sources[f"train.{key}"] = where
    for option in options:
        sources.setdefault(f"method.{option}", f"default of {config.method.name}")
    if validated:
        validate(config, check_weights, check_data)
    return Resolved(config, sources)


def parse_config(tree: dict[str, Any] | None, overrides: list[str] | None = None) -> Config:
    return resolve(tree, overrides).config


def resolve_file(path: str | Path, overrides: list[str] | None = None, check_weights: bool = True,
                 check_data: bool = False) -> Resolved:
    origins: dict[str, str] = {}
    return resolve(read_yaml_tree(Path(path), origins=origins), overrides, origins, check_weights, check_data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    return resolve_file(path, overrides).config


def build_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The Config of a file plus overrides, not validated: hpcfed check-env reports its problems beside the
    checks of the machine (weights, data) instead of stopping at the first."""
    origins: dict[str, str] = {}
    return resolve(read_yaml_tree(Path(path), origins=origins), overrides, origins, validated=False).config
