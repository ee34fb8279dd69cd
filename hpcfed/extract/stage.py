"""Make or reuse the feature cache of a run (the client hosts then switch to it: `ClientHost.use_feature_cache`).
Collective: every rank calls it; user errors (stale cache, a method that trains the patch embedding) stop all
ranks cleanly."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hpcfed.errors import CacheError
from hpcfed.extract.cache import Plan, build, cache_key, cache_parts, check
from hpcfed.extract.prefix import find_cut
from hpcfed.runtime import SERVER, agree


def _describe(host, cfg):
    from hpcfed.models import weights_file

    weights = weights_file(cfg.model.name, cfg.model.pretrained)
    try:
        cut = find_cut(host.clip, host.method.added, host.method.image_tokens)
    except ValueError as e:
        raise CacheError(f"extract: {e}; set extract.enabled: false for method {cfg.method.name}") from None
    return cut, cache_parts(cfg, host.images.listing, host.images.preprocess, cut, weights)


def prepare_cache(cfg, rt, host, listing, splits, overwrite: bool = False) -> tuple[Path, object]:
    """The cache file of this run, extracted now if missing (or if `overwrite`); refuses a stale one."""
    described = agree(rt.world, lambda: _describe(host, cfg) if rt.is_reference else None)
    cut, parts = rt.world.bcast(described, root=rt.reference_rank)
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
