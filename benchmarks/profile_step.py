"""Where a training step of the tiny CLIP spends its time: inside torch's C++ operators, or in Python (hpcfed,
open_clip, torch.nn module dispatch). cProfile's own cost lands on the Python side, so the Python share it
reports is an upper bound."""

from __future__ import annotations

import cProfile
import pstats
from pathlib import Path

from common import log


def _is_native(key: tuple) -> bool:
    filename, _, name = key
    return filename == "~" or name.startswith("<built-in") or name.startswith("<method")


def _profile(host, label: str) -> dict:
    for r in range(3):  # warm-up: decode the images and most of their views once
        host.train(host.clients[0], r)
    profile = cProfile.Profile()
    profile.enable()
    host.train(host.clients[0], 3)
    profile.disable()
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, ncalls, tottime, cumtime, callers)
    total = sum(v[2] for v in stats.values())
    python = sum(v[2] for k, v in stats.items() if not _is_native(k))
    top = sorted(((v[2], k) for k, v in stats.items() if not _is_native(k)), reverse=True)[:3]
    where = "; ".join(f"{Path(k[0]).name}:{k[2]} {t / total:.1%}" for t, k in top)
    log(f"  {label}: Python share of the step {python / total:.1%} (largest: {where})")
    return {"section": "profile", "workload": f"tiny CLIP pFedMMA, 8 steps of 32, {label}",
            "metric": "Python share of a step", "baseline": None, "hpcfed": python / total, "ratio": None, "reps": 1,
            "notes": f"cProfile, upper bound; {total:.2f} s profiled; largest Python frames: {where}; target < 10%"}


def run(out: Path) -> list[dict]:
    import cache_epoch

    log("profile of local training steps, tiny CLIP, pFedMMA, batch 32")
    hosts = cache_epoch._hosts({}, "pfedmma", 256, 32, out)["hosts"]
    return [_profile(hosts["no cache"], "from images"), _profile(hosts["cache"], "from the feature cache")]
