"""The MPI runtime measured on the demo data (tiny CLIP, pFedMMA):
- N client ranks against one client rank doing every client one after another (the reference codebases'
  pattern), same clients, rounds and data;
- the share of a round spent outside local training and evaluation (aggregation, waiting, I/O) at 10 clients;
- bytes moved per round by each method (10 clients, fp32 payloads), as the runtime records them in /comm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import REPO, hpcfed_train, log, median, steady_rounds

CONFIG = str(REPO / "configs/demo.yaml")
# 10 clients over 2 demo styles, every client every round, evaluation every round (timed apart).
TEN = {"clients": 10, "partition.scheme": "dirichlet", "participation": 1.0, "rounds": 3, "train.local_epochs": 1,
       "runtime.checkpoint_every": 0, "data.domains": "[noto,twemoji]"}


def ranks_vs_sequential(out: Path, client_ranks: int = 2, reps: int = 2) -> tuple[list[dict], dict]:
    log(f"{client_ranks} client ranks vs 1 client rank (clients one after another), 10 clients")
    per_round = {"sequential": [], "parallel": []}
    last = None
    for r in range(reps):
        for label, ranks in (("sequential", 2), ("parallel", client_ranks + 1)):
            result = hpcfed_train(ranks, CONFIG, TEN, out / f"{label}-{r}.h5")
            per_round[label].append(median(steady_rounds(result["round_seconds"])))
            if label == "parallel":
                last = result
    seq, par = median(per_round["sequential"]), median(per_round["parallel"])
    log(f"  sequential {seq:.2f} s/round, {client_ranks} ranks {par:.2f} s/round -> {seq / par:.2f}x")
    rows = [{"section": "runtime", "workload": "demo, 10 clients, pFedMMA, tiny CLIP", "metric": "s per round",
             "baseline": seq, "hpcfed": par, "ratio": seq / par, "reps": reps,
             "notes": f"baseline: 1 client rank trains the 10 clients one after another; hpcfed: {client_ranks} "
                      "client ranks; rounds after the first, medians"}]
    return rows, last


def aggregation_share(result: dict) -> list[dict]:
    """Round time not spent in local training or evaluation on the busiest client rank, per round."""
    t = result["timing"]
    busy = (t["train"] + t["evaluate"])[:, 1:].max(axis=1)  # client ranks only
    rounds = np.asarray(result["round_seconds"])
    share = steady_rounds((rounds - busy) / rounds)
    aggregate = steady_rounds(t["aggregate"][:, 1:].max(axis=1) / rounds)
    log(f"  outside training+evaluation: {np.median(share):.1%} of the round "
        f"(aggregate phase {np.median(aggregate):.1%})")
    return [{"section": "runtime", "workload": "demo, 10 clients, 2 client ranks",
             "metric": "share of round outside training+evaluation", "baseline": None,
             "hpcfed": float(np.median(share)),
             "ratio": None, "reps": len(share),
             "notes": f"median over rounds 2..; the Allreduce phase alone (incl. waiting for the slower rank) "
                      f"{np.median(aggregate):.1%}; target < 5%"}]


def bytes_per_method(measured: dict, clients: int = 10) -> list[dict]:
    """Floats each method sends and receives per client, from its shared parameters (what the runtime records
    in /comm), for the tiny CLIP and ViT-B-16; checked against the pFedMMA run file's /comm/bytes."""
    import torch

    from hpcfed.methods import METHODS
    from hpcfed.models import create_backbone

    log("bytes per round per method")
    rows = []
    for model in ("hpcfed-tinyclip-vit-p12-96-w192", "ViT-B-16"):
        base, _, _ = create_backbone(model, None)
        for name, cls in sorted(METHODS.items()):
            import copy

            method = cls({})
            added = method.attach(copy.deepcopy(base), torch.Generator().manual_seed(0))
            n_shared = sum(p.numel() for n, p in added.named_parameters() if method.is_shared(n))
            up, down = method.upload_download_floats(n_shared)
            total = clients * 4 * (up + down)
            if model.startswith("hpcfed") and name == "pfedmma":
                assert total == int(measured["comm_bytes"][0]), (total, measured["comm_bytes"][0])
            rows.append({"section": "bytes", "workload": f"{name} on {model}", "metric": "bytes per round",
                         "baseline": None, "hpcfed": total, "ratio": None, "reps": 1,
                         "notes": f"{clients} clients x (up {up} + down {down}) fp32 floats; "
                                  f"{n_shared} shared of {sum(p.numel() for p in added.parameters())} added"})
    return rows
