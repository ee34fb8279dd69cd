"""Metric arithmetic shared by training, the run file and reports (no torch)."""

from __future__ import annotations

import numpy as np


def harmonic_mean(*values: float) -> float:
    """k-way harmonic mean, e.g. of Local, Base and Novel (methods.md §1.7): NaN if any value is missing
    (a client without that evaluation), 0 if any is 0."""
    if any(np.isnan(v) for v in values):
        return float("nan")
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def select_round(eval_rounds: list[int], val_accuracy: dict[int, np.ndarray]) -> tuple[int, str]:
    """Model selection on validation data, never on test: the evaluated round with the best mean validation
    accuracy (the earliest on ties); the last evaluated round when there is no validation data."""
    scores = {r: np.nanmean(val_accuracy[r]) if np.isfinite(val_accuracy[r]).any() else np.nan for r in eval_rounds}
    valid = [r for r in eval_rounds if np.isfinite(scores[r])]
    if not valid:
        return eval_rounds[-1], "last round (no validation data)"
    best = max(valid, key=lambda r: (scores[r], -r))
    return best, f"best mean val_accuracy ({scores[best]:.4f})"


# Accuracies as the papers' tables name them (test_accuracy is Local: each client on its own test split).
ACCURACY_NAMES = {"test_accuracy": "Local", "base_accuracy": "Base", "novel_accuracy": "Novel", "hm": "HM"}


def format_accuracy(fraction: float) -> str:
    """An accuracy (stored as a fraction) as `hpcfed report` prints it: percent with one decimal, 75.0%."""
    return f"{100 * fraction:.1f}%"


def format_accuracies(fractions: dict[str, float]) -> str:
    """{test_accuracy: 0.75, hm: ...} as "Local 75.0%, HM ..." (names without a paper name are left out)."""
    return ", ".join(f"{ACCURACY_NAMES[name]} {format_accuracy(value)}" for name, value in fractions.items()
                     if name in ACCURACY_NAMES)


def format_bytes(n: float) -> str:
    """Decimal units as network and storage tools print them: 512 B, 12.3 kB, 4.5 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def format_duration(seconds: float) -> str:
    """H:MM:SS, for ETAs and ages in progress lines and `hpcfed status`."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
