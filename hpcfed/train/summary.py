"""The per-client table printed at the end of `hpcfed train`: each client's accuracy on its own test split under
CLIP zero-shot (before training), after the first round, at the round selected on validation, and at the last;
for base-to-novel runs also Local / Base / Novel / HM against zero-shot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcfed.results import open_run


def _column(f, which: str) -> np.ndarray | None:
    round_key = f"final/{which}_round"
    if round_key not in f or (which != "zeroshot" and int(f[round_key][()]) < 0):
        return None
    values = f[f"final/{which}/test_accuracy"][:]
    return values if np.isfinite(values).any() else None


def print_client_table(path: Path) -> None:
    with open_run(path) as f:
        acc = f["metrics/client/test_accuracy"][:]
        domains = [d.decode() if isinstance(d, bytes) else d for d in f["splits/domain_names"][:]]
        client_domain = f["splits/client_domain"][:]
        sizes = [(len(f[f"splits/clients/{i}/train"]), len(f[f"splits/clients/{i}/test"]))
                 for i in range(acc.shape[1])]
        columns = {}
        zero_shot = _column(f, "zeroshot")
        if zero_shot is not None:
            columns["zero-shot"] = zero_shot
        evaluated = [r for r in range(int(f["progress/rounds_done"][()])) if np.isfinite(acc[r]).any()]
        first = acc[evaluated[0]]
        # A round that scored a sample (train.eval_clients) says so: its mean is over the sample only.
        sampled = np.isfinite(first).sum() < np.isfinite(acc[evaluated[-1]]).sum()
        columns[f"round {evaluated[0] + 1}{' sample' if sampled else ''}"] = first
        for which in ("selected", "last"):
            values = _column(f, which)
            if values is not None:
                columns[f"{which} (r{int(f[f'final/{which}_round'][()]) + 1})"] = values
        summary = {which: {m: float(f[f"final/{which}/summary/{m}"][()]) for m in f[f"final/{which}/summary"]}
                   for which in ("zeroshot", "selected", "last") if _column(f, which) is not None}
        held_out = f["splits/holdout_clients"][:].tolist() if "splits/holdout_clients" in f else []
    # Percent with one decimal, as `hpcfed report` and `hpcfed status` print accuracies.
    print(f"\n{'client':>6}  {'domain':<14} {'train':>5} {'test':>5}" + "".join(f"  {c:>14}" for c in columns))
    for c in range(acc.shape[1]):
        domain = domains[client_domain[c]] if client_domain[c] >= 0 else "mixed"
        print(f"{c:>6}  {domain:<14} {sizes[c][0]:>5} {sizes[c][1]:>5}"
              + "".join(f"  {100 * v[c]:>13.1f}%" if np.isfinite(v[c]) else f"  {'-':>14}" for v in columns.values()))
    means = "".join(f"  {100 * np.nanmean(v):>13.1f}%" for v in columns.values())
    print(f"{'mean':>6}  {'':<14} {'':>5} {'':>5}{means}")
    if zero_shot is not None and "selected" in summary:
        gain = columns[next(k for k in columns if k.startswith("selected"))] - zero_shot
        print(f"selected round vs zero-shot: mean {100 * np.nanmean(gain):+.1f} points, "
              f"{int(np.sum(gain < 0))} of {int(np.isfinite(gain).sum())} clients below their zero-shot accuracy")
    _print_unseen(summary, held_out)
    if summary and np.isfinite(summary[next(iter(summary))].get("novel_accuracy", np.nan)):
        print(f"\n{'':<10}" + "".join(f"{m:>8}" for m in ("Local", "Base", "Novel", "HM")))
        for which, values in summary.items():
            print(f"{which:<10}" + "".join(f"{100 * values[m]:>7.1f}%" for m in ("test_accuracy", "base_accuracy",
                                                                                "novel_accuracy", "hm")))


def _print_unseen(summary: dict[str, dict[str, float]], held_out: list[int]) -> None:
    """Clients held out of training (rows '-' above) and the held-out domain, against zero-shot."""
    def percent(which: str, name: str) -> str:
        value = summary.get(which, {}).get(name, np.nan)
        return f"{100 * value:.1f}%" if np.isfinite(value) else "-"

    if held_out:
        print(f"unseen clients {held_out} (never trained), selected round: as new clients "
              f"{percent('selected', 'unseen_fresh_accuracy')}, after train.holdout_steps local steps "
              f"{percent('selected', 'unseen_adapted_accuracy')} "
              f"(zero-shot {percent('zeroshot', 'unseen_fresh_accuracy')})")
    if np.isfinite(summary.get("selected", {}).get("unseen_domain_accuracy", np.nan)):
        print(f"held-out domain, every client on it, selected round: {percent('selected', 'unseen_domain_accuracy')} "
              f"(zero-shot {percent('zeroshot', 'unseen_domain_accuracy')})")
