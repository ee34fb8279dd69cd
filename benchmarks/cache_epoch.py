"""Time per local epoch with and without the frozen-prefix cache, in one process on one thread, the variants
alternating: pFedMMA on ViT-B-16 (random init, 224 px) and on the shipped tiny CLIP; PromptFL (image tower
frozen: the cache holds embeddings) for contrast. Training uses 4 fixed augmented views per image.

For ViT-B-16 pFedMMA a third variant runs the reference codebases' pattern: images decoded and cropped afresh
every epoch, and the text tower over the full 77-token context."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from common import REPO, log, median

VIT_B16 = {"model.name": "ViT-B-16", "model.pretrained": None}
WORKLOADS = [
    # name, model overrides, method, training images (one epoch), batch, with the reference variant
    ("pfedmma ViT-B-16 224px", VIT_B16, "pfedmma", 8, 8, True),
    ("pfedmma tiny CLIP 96px", {}, "pfedmma", 64, 32, False),
    ("promptfl ViT-B-16 224px", VIT_B16, "promptfl", 8, 8, False),
]
VIEWS = 4


def _hosts(overrides: dict, method: str, shots: int, batch: int, out: Path, reference: bool = False) -> dict:
    from hpcfed.config import load_config
    from hpcfed.data import load_listing
    from hpcfed.extract.stage import prepare_cache
    from hpcfed.runtime import init_runtime
    from hpcfed.train import client as client_module
    from hpcfed.train.setup import build_host, prepare_splits

    tree = {**overrides, "method": f"{{name: {method}}}", "clients": 1, "partition.scheme": "iid", "partition.shots": 0,
            "train.batch_size": batch, "train.local_epochs": 1, "output": str(out / f"{method}.h5"),
            "extract.enabled": True, "extract.dir": str(out / "cache"), "data.domains": "[noto]",
            "train.augment": True, "train.augment_views": VIEWS}
    cfg = load_config(REPO / "configs/demo.yaml", [f"{k}={'null' if v is None else v}" for k, v in tree.items()])
    rt = init_runtime("cpu", 1)
    listing = load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains, cfg.data.class_names_file)
    splits = prepare_splits(cfg, listing, overwrite=True).splits
    c = splits.clients[0]  # a small image set: one epoch of `shots` images (evaluation is not timed)
    splits = dataclasses.replace(splits, clients=(dataclasses.replace(c, train=c.train[:shots], val=c.val[:0],
                                                                      test=c.test[:2]),))
    hosts = {"no cache": build_host(cfg, rt, listing, splits, [0]), "cache": build_host(cfg, rt, listing, splits, [0])}
    t = time.perf_counter()
    path, cut = prepare_cache(cfg, rt, hosts["cache"], listing, splits, overwrite=True)
    extract_s = time.perf_counter() - t
    hosts["cache"].use_feature_cache(path, cut)
    if reference:
        # The reference pattern, for this benchmark only: fresh crops decoded from disk every epoch (no
        # decoded-image memory), the untrimmed text context.
        trim, client_module.trim_text_context = client_module.trim_text_context, lambda clip, token_sets: None
        try:
            hosts["reference"] = build_host(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                            cache_images=False), train=dataclasses.replace(cfg.train,
                                            augment_views=0)), rt, listing, splits, [0])
        finally:
            client_module.trim_text_context = trim
    return {"hosts": hosts, "extract_s": extract_s, "cut": cut, "images": shots + 2}


def run(out: Path, reps: int = 3) -> list[dict]:
    rows = []
    for name, overrides, method, shots, batch, reference in WORKLOADS:
        log(f"cache vs no cache: {name}")
        made = _hosts(overrides, method, shots, batch, out, reference)
        times = {label: [] for label in made["hosts"]}
        for r in range(reps + 1):  # the first pass warms every variant up (decode, allocator) and is dropped
            for label, host in made["hosts"].items():
                t = time.perf_counter()
                host.train(host.clients[0], r)
                if r:
                    times[label].append(time.perf_counter() - t)
        seconds = {label: median(v) for label, v in times.items()}
        notes = (f"{shots} images x {VIEWS} fixed views, batch {batch}; cut: {made['cut'].describe()}; one-time "
                 f"extraction of {made['images']} images x views {made['extract_s']:.1f} s")
        rows.append({"section": "cache", "workload": name, "metric": "s per local epoch, no cache / cache",
                     "baseline": seconds["no cache"], "hpcfed": seconds["cache"],
                     "ratio": seconds["no cache"] / seconds["cache"], "reps": reps, "notes": notes})
        if "reference" in seconds:
            rows.append({"section": "cache", "workload": name,
                         "metric": "s per local epoch, reference pattern / hpcfed with cache",
                         "baseline": seconds["reference"], "hpcfed": seconds["cache"],
                         "ratio": seconds["reference"] / seconds["cache"], "reps": reps,
                         "notes": "reference: decode + augment every epoch, text over all 77 positions, no cache"})
        log("  " + ", ".join(f"{label} {s:.2f} s" for label, s in seconds.items()))
        del made
    return rows
