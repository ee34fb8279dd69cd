"""Published sizes of the datasets the shipped configs name: classes, domains, official split and images per
class, for the synthetic listings of tests/test_configs_fit_real_datasets.py. Each number names its source.

A dataset is a `Shape`: per domain, per class, how many images it has in (train, val, test) of its official
split, or in all when it has none. Where only totals are published they are spread over the classes as evenly
as possible (`even`); the known smallest classes are kept, and put first (lowest labels: among the base
classes of base-to-novel, where the 16-shot rule applies, which is the harder case)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shape:
    domains: tuple[str, ...]
    # counts[d][c]: (train, val, test) images of class c in domain d; with split False, one number: all images
    counts: tuple[tuple[tuple[int, ...], ...], ...]
    split: bool
    coarse_of_class: tuple[int, ...] | None = None  # CIFAR-100's superclass of each class

    @property
    def n_classes(self) -> int:
        return len(self.counts[0])


def even(total: int, n: int) -> list[int]:
    """`total` over `n` classes as evenly as possible: the first `total % n` classes get one more."""
    return [total // n + (c < total % n) for c in range(n)]


def with_smallest(total: int, n: int, smallest: list[int]) -> list[int]:
    """The known smallest classes first, the rest of the total spread evenly over the other classes."""
    return smallest + even(total - sum(smallest), n - len(smallest))


def coop(classes: int, train: int, val: int, test: int, smallest: tuple[int, int, int] | None = None,
         n_smallest: int = 0) -> Shape:
    """A CoOp dataset: one domain, its official train / val / test totals spread over the classes."""
    small = [smallest] * n_smallest if smallest else []
    columns = [with_smallest(total, classes, [s[i] for s in small]) for i, total in enumerate((train, val, test))]
    return Shape(("all",), (tuple(zip(*columns, strict=True)),), split=True)


# CoOp datasets: CoOp paper (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022), Table 1
# (classes, train, val, test); the split_zhou_*.json files hold exactly these subsets.
COOP = {
    # ImageNet: 1,281,167 train images, its 50,000 val images are CoOp's test set (50 per class), no val set.
    # The real per-class minimum is 732 train images; spread evenly (1281 or 1282) makes no difference to a
    # split of shots=16, which draws 16 of them.
    "imagenet": coop(1000, 1_281_167, 0, 50_000),
    # Smallest classes: 31 images (Caltech-101, e.g. inline_skate), cut 16/6/9 by CoOp's 50/20/30 rule with
    # Python's round (round(15.5) = 16, round(6.2) = 6, the rest test).
    "caltech101": coop(100, 4_128, 1_649, 2_465, smallest=(16, 6, 9), n_smallest=2),
    "oxford_pets": coop(37, 2_944, 736, 3_669),
    "stanford_cars": coop(196, 6_509, 1_635, 8_041),
    # Smallest classes: 40 images (Nilsback & Zisserman 2008: "between 40 and 258 images per class"), 20/8/12.
    "oxford_flowers": coop(102, 4_093, 1_633, 2_463, smallest=(20, 8, 12), n_smallest=2),
    "food101": coop(101, 50_500, 20_200, 30_300),
    "fgvc_aircraft": coop(100, 3_334, 3_333, 3_333),
    "sun397": coop(397, 15_880, 3_970, 19_850),
    "dtd": coop(47, 2_820, 1_128, 1_692),
    "eurosat": coop(10, 13_500, 5_400, 8_100),
    "ucf101": coop(101, 7_639, 1_898, 3_783),
}

# CIFAR: Krizhevsky 2009 (the python batches): 10 classes x 5,000 train / 1,000 test; 100 classes x 500 / 100
# in 20 superclasses of 5 classes. Which 5 classes form a superclass does not change how superclass_dirichlet
# draws, so class c has superclass c // 5 here.
CIFAR = {
    "cifar10": Shape(("all",), (((5_000, 0, 1_000),) * 10,), split=True),
    "cifar100": Shape(("all",), (((500, 0, 100),) * 100,), split=True,
                      coarse_of_class=tuple(c // 5 for c in range(100))),
}

# Office-Home: Venkateswara et al. 2017, 65 classes; images per domain from the dataset's page (Art 2,427,
# Clipart 4,365, Product 4,439, Real World 4,357). No official split. Art's smallest classes hold 15 images.
OFFICE_HOME = Shape(
    ("Art", "Clipart", "Product", "Real World"),
    (tuple(with_smallest(2_427, 65, [15, 15, 15])), tuple(even(4_365, 65)), tuple(even(4_439, 65)),
     tuple(even(4_357, 65))),
    split=False,
)

# Office-Caltech10: Gong et al. 2012 (the 10 classes shared by Office-31 and Caltech-256), images per class in
# amazon / caltech / dslr / webcam, as in the office_caltech_10 archive. No official split.
OFFICE_CALTECH10_PER_CLASS = {
    "back_pack": (92, 151, 12, 29), "bike": (82, 110, 21, 21), "calculator": (94, 100, 12, 31),
    "headphones": (99, 139, 13, 27), "keyboard": (100, 85, 10, 27), "laptop_computer": (100, 128, 24, 30),
    "monitor": (99, 133, 22, 43), "mouse": (100, 93, 12, 30), "mug": (94, 87, 8, 27), "projector": (98, 97, 23, 30),
}
OFFICE_CALTECH10 = Shape(("amazon", "caltech", "dslr", "webcam"),
                         tuple(zip(*OFFICE_CALTECH10_PER_CLASS.values(), strict=True)), split=False)

# DomainNet: Peng et al. 2019, 345 classes; official <domain>_train.txt / <domain>_test.txt sizes (train, test).
DOMAINNET_TOTALS = {
    "clipart": (33_525, 14_604), "infograph": (36_023, 15_582), "painting": (50_416, 21_850),
    "quickdraw": (120_750, 51_750), "real": (120_906, 52_041), "sketch": (48_212, 20_916),
}
# DomainNet-10 (the 10-class subset of FedBN-style papers): the exact per-class counts of those 10 classes are
# not at hand here, so each class gets its domain's per-class mean (quickdraw's is exact: 350 / 150).
DOMAINNET10 = Shape(
    tuple(DOMAINNET_TOTALS),
    tuple(((round(train / 345), 0, round(test / 345)),) * 10 for train, test in DOMAINNET_TOTALS.values()),
    split=True,
)

SHAPES: dict[str, Shape] = {**COOP, **CIFAR, "office_home": OFFICE_HOME, "office_caltech10": OFFICE_CALTECH10,
                            "domainnet10": DOMAINNET10}


def coarse_labels(shape: Shape, labels: np.ndarray) -> np.ndarray:
    """Per-sample superclass, as the CIFAR-100 reader stores it in notes['coarse_labels']."""
    return np.asarray(shape.coarse_of_class, dtype=np.int64)[labels]
