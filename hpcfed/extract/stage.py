"""Make or reuse the feature cache of a run and switch the client hosts over to it. Collective: every rank
calls it; user errors (stale cache, a method that trains the patch embedding) stop all ranks cleanly."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from hpcfed.errors import CacheError
from hpcfed.extract.cache import FeatureSource, Plan, build, cache_key, cache_parts, check
from hpcfed.extract.prefix import CachedVisual, TextPrefixCache, find_cut
from hpcfed.train.runtime import SERVER, agree


def _describe(host, cfg):
    from hpcfed.models import _cached_weight, local_weights

    pretrained = cfg.model.pretrained
    weights = local_weights(pretrained) or (_cached_weight(cfg.model.name, pretrained) if pretrained else None)
    try:
        cut = find_cut(host.clip, host.method.added, host.method.image_tokens)
    except ValueError as e:
        raise CacheError(f"extract: {e}; set extract.enabled: false for method {cfg.method.name}") from None
    return cut, cache_parts(cfg, host.images.listing, host.images.preprocess, cut, Path(weights) if weights else None)


def prepare_cache(cfg, rt, host, listing, splits, overwrite: bool = False) -> tuple[Path, object]:
    """The cache file of this run, extracted now if missing (or if `overwrite`); refuses a stale one."""
    describer = 1 if rt.size > 1 else 0
    described = agree(rt.world, lambda: _describe(host, cfg) if rt.rank == describer else None)
    cut, parts = rt.world.bcast(described, root=describer)
    path = Path(cfg.extract.dir) / f"{cache_key(parts)}.h5"

    def status() -> str:
        if overwrite or not path.exists():
            # Checked before any rank extracts: a cache that cannot be written is a config error, not a crash.
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(f"extract.dir {path.parent} cannot be created ({e.strerror}); set extract.dir "
                                 "to a writable directory") from None
            if not os.access(path.parent, os.W_OK):
                raise CacheError(f"extract.dir {path.parent} is not writable; set extract.dir to a writable "
                                 "directory") from None
            return "build"
        check(path, parts, listing)
        return "use"

    todo = rt.world.bcast(agree(rt.world, lambda: status() if rt.is_server else None), root=SERVER)
    plan = Plan.of(splits, cfg.train.augment_views)
    if todo == "build":
        if rt.is_server:
            views = f" and {plan.views} views of {len(plan.view_index)}" if plan.views else ""
            sys.stdout.write(f"extracting the frozen prefix ({cut.describe()}) of {len(plan.eval_index)} images"
                             f"{views} into {path}\n")
            sys.stdout.flush()
        t = time.perf_counter()
        build(path, parts, plan, rt, host.images if host else None, host.clip.visual if host else None, cut, listing)
        if rt.is_server:
            sys.stdout.write(f"extracted in {time.perf_counter() - t:.1f} s\n")
    elif rt.is_server:
        sys.stdout.write(f"using feature cache {path} ({cut.describe()})\n")
    return path, cut


def use_cache(host, path: Path, cut) -> None:
    """Point a client host at the cache: features instead of pixels, the image tower from the cut on, and the
    text tower's frozen prefix remembered per set of class prompts."""
    held_out = [c.split.val for c in host.clients.values()] + [c.split.test for c in host.clients.values()]
    held_out += [a for a in (host.splits.base_test, host.splits.novel_test) if a is not None]
    train = [c.split.train for c in host.clients.values()]
    empty = [np.zeros(0, np.int64)]
    host.images = FeatureSource(path, np.concatenate(held_out + empty), np.concatenate(train + empty))
    host.clip.visual = CachedVisual(host.clip.visual, cut)
    host.clip.transformer = TextPrefixCache(host.clip.transformer, host.method.added)


def run_extract(cfg, rt, overwrite: bool = False) -> Path:
    """`hpcfed extract`: the splits of the run (made or reused, as `train` would), then the cache. Every client
    rank extracts a slice (rank 0 alone when the job has one rank)."""
    from hpcfed.data import load_listing
    from hpcfed.split.stage import prepare_splits
    from hpcfed.train.loop import build_host

    world = rt.world
    listing = agree(world, lambda: load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains,
                                                cfg.data.class_names_file))
    prepared = agree(world, lambda: prepare_splits(cfg, listing, resuming=True) if rt.is_server else None)
    prepared = world.bcast(prepared, root=SERVER)
    listing = listing.without(prepared.unreadable)
    extracts = rt.size == 1 or not rt.is_server
    host = agree(world, lambda: build_host(cfg, rt, listing, prepared.splits, []) if extracts else None)
    path, _ = prepare_cache(cfg, rt, host, listing, prepared.splits, overwrite)
    return path
