"""Published results of the papers hpcfed reproduces, as data: only the numbers /work/shared/spec/methods.md
holds (§1.9 for pFedMMA; §2 has none for FedVLM), each with its source and the protocol it was measured under,
for `hpcfed report --published NAME`. Accuracies in %, as the papers print them; None where the paper has no
such number."""

from __future__ import annotations

from dataclasses import dataclass, field

# The 7 base-to-novel datasets of pFedMMA (methods.md §1.6a), by hpcfed's dataset names (configs/base2novel/).
PFEDMMA_BASE_TO_NOVEL = ("oxford_pets", "oxford_flowers", "dtd", "caltech101", "food101", "ucf101", "sun397")


@dataclass(frozen=True)
class Protocol:
    """What the published numbers were measured under, in the terms of a run's config."""
    shots: int  # training images per class, 0: all of them (partition.shots)
    clients: int
    backbone: str  # model.name
    pretrained: str  # model.pretrained
    rounds: int | None  # None: the spec does not say
    base_novel: bool  # partition.base_novel: Base and Novel exist only in base-to-novel runs


@dataclass(frozen=True)
class PublishedTable:
    paper: str
    table: str  # which table of the paper, and what it averages
    source: str  # where the numbers come from, and how far they are verified
    datasets: tuple[str, ...]  # hpcfed dataset names the numbers are about
    averaged: bool  # True: one number per method for the mean over `datasets`, no per-dataset numbers
    protocol: Protocol
    # method name (hpcfed's) -> {"Local": , "Base": , "Novel": , "HM": }
    numbers: dict[str, dict[str, float | None]] = field(default_factory=dict)


def _local_base_novel_hm(local: float, base: float, novel: float, hm: float) -> dict[str, float]:
    return {"Local": local, "Base": base, "Novel": novel, "HM": hm}


PFEDMMA = "pFedMMA (Ghiasvand, Alizadeh, Pedarsani; ICLR 2026, arXiv 2507.05394)"
# Table B's protocol comes from the released scripts (methods.md §1.5-1.6c); the table's own evaluation is
# UNVERIFIED and its low accuracies suggest another (e.g. unseen-domain) one (§1.9): read its differences so.
TABLE_B_SOURCE = ("methods.md §1.9 Table B, from secondary summaries (paper notes, OpenReview reviews); protocol "
                  "UNVERIFIED, do not use as a sanity target")

PAPERS: dict[str, tuple[PublishedTable, ...]] = {
    "pfedmma": (
        PublishedTable(
            paper=PFEDMMA, table="Table A, base-to-novel, mean over its 7 datasets",
            source="methods.md §1.9 Table A, from paper-note summaries of the ICLR 2026 version (not checked "
                   "against the PDF); per-dataset numbers are not available",
            datasets=PFEDMMA_BASE_TO_NOVEL, averaged=True,
            protocol=Protocol(shots=16, clients=10, backbone="ViT-B-16", pretrained="openai", rounds=50,
                              base_novel=True),
            numbers={"zeroshot": _local_base_novel_hm(76.36, 76.81, 81.21, 78.03),
                     "promptfl": _local_base_novel_hm(88.93, 88.95, 75.36, 83.09),
                     "fedpgp": _local_base_novel_hm(95.38, 76.49, 71.68, 79.09),
                     "fedotp": _local_base_novel_hm(97.34, 18.00, 36.69, 31.08),
                     "pfedmoap": _local_base_novel_hm(97.89, 61.82, 66.60, 71.05),
                     "pfedmma": _local_base_novel_hm(97.17, 77.40, 81.49, 84.15)}),
        PublishedTable(
            paper=PFEDMMA, table="Table B, DomainNet (10 classes), feature + label shift, beta 0.5",
            source=TABLE_B_SOURCE, datasets=("domainnet10",), averaged=False,
            protocol=Protocol(shots=0, clients=30, backbone="ViT-B-16", pretrained="openai", rounds=50,
                              base_novel=False),
            numbers={"fedpgp": {"Local": 24.90}, "pfedmoap": {"Local": 24.65}, "pfedmma": {"Local": 47.17}}),
        PublishedTable(
            paper=PFEDMMA, table="Table B, Office-Caltech10, feature + label shift, beta 0.5",
            source=TABLE_B_SOURCE, datasets=("office_caltech10",), averaged=False,
            protocol=Protocol(shots=0, clients=12, backbone="ViT-B-16", pretrained="openai", rounds=50,
                              base_novel=False),
            numbers={"fedpgp": {"Local": 20.71}, "pfedmoap": {"Local": 19.55}, "pfedmma": {"Local": 21.33}}),
    ),
}

# Papers the spec covers but without numbers to put beside a run, and why.
NOT_TABULATED = {
    "fedvlm": "methods.md §2 has no Local/Base/Novel/HM numbers for FedVLM/pLoRA: only a relative '+24.5% over "
              "fully shared federated LoRA' on RLAIF-V (a preference dataset), with the metric UNVERIFIED",
    "plora": "pLoRA is FedVLM's method: methods.md §2 has no Local/Base/Novel/HM numbers for it",
}
