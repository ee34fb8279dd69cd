"""`make bench`: every benchmark in one run, written to OUT/bench.json and OUT/bench.md.

    python benchmarks/run.py --out runs/bench [--skip flower] [--only cache,runtime]

Each figure is a ratio of two things measured side by side in this run (medians of alternating repetitions),
so a busy shared machine slows both sides alike; absolute seconds are for this machine only."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import BIN, ENV, REPO, log, machine  # noqa: E402

SECTIONS = ("cache", "profile", "runtime", "clients", "checkpoint", "flower")


def flower_rows(out: Path) -> list[dict]:
    r = subprocess.run([str(BIN / "python"), str(REPO / "benchmarks/flower.py"), "--out", str(out)], env=ENV,
                       cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"benchmarks/flower.py failed ({r.returncode})")
    data = json.loads((out / "flower.json").read_text())
    return [{"section": "flower", "workload": row["workload"], "metric": row["metric"], "baseline": row["flower"],
             "hpcfed": row["hpcfed"], "ratio": row["ratio"], "reps": row["reps"], "notes": row.get("notes", "")}
            for row in data["rows"]]


def markdown(info: dict, rows: list[dict]) -> str:
    def num(v, metric=""):
        if v is None:
            return ""
        if "share" in metric:
            return f"{v:.1%}"
        return f"{v:,.0f}" if isinstance(v, int) or abs(v) >= 1000 else f"{v:.3g}"

    lines = [f"# hpcfed benchmarks ({time.strftime('%Y-%m-%d %H:%M', time.gmtime(info['finished']))} UTC)", "",
             f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, "
             f"{info['machine']['memory_mb'] // 1024} GiB, torch {info['machine']['torch']}, load average at start "
             f"{info['machine']['load_average_at_start']:.1f}; {info['minutes']:.1f} min in all.", "",
             "Ratio = baseline / hpcfed (above 1: hpcfed is faster or smaller).", "",
             "| section | workload | metric | baseline | hpcfed | ratio | reps | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"**{r['ratio']:.2f}x**"
        values = f"{num(r['baseline'], r['metric'])} | {num(r['hpcfed'], r['metric'])}"
        lines.append(f"| {r['section']} | {r['workload']} | {r['metric']} | {values} "
                     f"| {ratio} | {r['reps']} | {r['notes']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench", type=Path)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s and s not in args.skip.split(",")]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    args.out.mkdir(parents=True, exist_ok=True)
    started, info, rows = time.time(), {"machine": machine()}, []
    import cache_epoch
    import checkpoint_bench
    import profile_step
    import runtime_bench
    import scaling

    if "cache" in chosen:
        rows += cache_epoch.run(args.out / "cache")
    if "profile" in chosen:
        rows += profile_step.run(args.out / "profile")
    if "runtime" in chosen:
        (args.out / "runtime").mkdir(exist_ok=True)
        ranks_rows, ten_clients = runtime_bench.ranks_vs_sequential(args.out / "runtime")
        rows += ranks_rows + runtime_bench.aggregation_share(ten_clients)
        rows += runtime_bench.bytes_per_method(ten_clients)
    if "clients" in chosen:
        (args.out / "clients").mkdir(exist_ok=True)
        rows += scaling.client_scaling(args.out / "clients")
    if "checkpoint" in chosen:
        rows += checkpoint_bench.run(args.out / "checkpoint")
    if "flower" in chosen:
        rows += flower_rows(args.out / "flower")
    info.update(finished=time.time(), minutes=(time.time() - started) / 60, sections=chosen)
    (args.out / "bench.json").write_text(json.dumps({**info, "rows": rows}, indent=1, default=float))
    (args.out / "bench.md").write_text(markdown(info, rows))
    log(f"wrote {args.out / 'bench.md'} and {args.out / 'bench.json'} ({info['minutes']:.1f} min)")
    sys.stdout.write(markdown(info, rows))


if __name__ == "__main__":
    main()
