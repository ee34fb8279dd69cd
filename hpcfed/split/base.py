"""What every partitioner shares: the `partition:` section of a config, the result types, and the candidates a
partitioner hands out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hpcfed.options import option

TRAIN, VAL, TEST = 0, 1, 2  # values of Listing.subset


@dataclass
class PartitionConfig:
    """The `partition:` section of a run config."""

    scheme: str = "domain_dirichlet"  # a name in hpcfed.split.PARTITIONERS
    # Dirichlet concentration (label shift; the superclass draw of superclass_dirichlet)
    beta: float = option(0.5, gt=0, fix="use e.g. beta: 0.5 (smaller = more skew)")
    # domain, domain_dirichlet: clients per domain; 0: spread the clients over the domains by size
    clients_per_domain: int = option(1, ge=0, fix="give clients per domain, or 0 to spread the clients over the "
                                     "domains by size")
    # share of a client's data (no official split) or of its train (no official val)
    val_fraction: float = option(0.1, ge=0, lt=1, fix="keep val_fraction + test_fraction below 1, e.g. 0.1 and 0.3")
    # share of a client's data when the dataset has no official test split
    test_fraction: float = option(0.3, gt=0, lt=1, fix="keep val_fraction + test_fraction below 1, e.g. 0.1 and 0.3")
    min_samples: int = option(2, ge=1, fix="set it to >= 1")  # smallest train set a client may get
    classes_per_client: int = option(2, ge=1, fix="use e.g. classes_per_client: 2")  # pathological: k per client
    # k training images per class (CoOp few-shot); 0: every training image
    shots: int = option(0, ge=0, fix="use e.g. shots: 16 for 16 training images per class, or 0 for all of them")
    base_novel: bool = False  # train on the base half of the classes, test also on Base and Novel (methods.md 1.6a)
    # superclass_dirichlet: Dirichlet concentration over the classes of a superclass
    fine_alpha: float = option(10.0, gt=0, fix="use e.g. fine_alpha: 10 (the CIFAR-100 protocol)")
    # superclass_dirichlet: samples per client from pooled train+test
    samples_per_client: int = option(600, ge=1, fix="use e.g. samples_per_client: 600 (the CIFAR-100 protocol)")
    # k clients, drawn from the seed, that never train: each evaluation scores them as new clients (global shared
    # state and the method's initial personal parameters; then after train.holdout_steps local steps)
    holdout_clients: int = option(0, ge=0, fix="use 0 for none, or k < clients, e.g. holdout_clients: 2")
    # leave-one-domain-out: no client holds this domain; every client is also scored on all of its images
    holdout_domain: str | None = None




@dataclass(frozen=True)
class ClientSplit:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    domain: int  # index into listing.domain_names, -1 when the client mixes domains
    classes: np.ndarray | None = None  # the client's own training classes (sorted label ids)


@dataclass(frozen=True)
class Splits:
    clients: tuple[ClientSplit, ...]
    scheme: str
    seed: int
    listing_digest: str
    params: dict = field(default_factory=dict)  # partition settings and client count, stored with the splits
    # Base-to-novel only (methods.md §1.6a): the class ids, and the global Base / Novel test sets, i.e. every
    # test image of a base / novel class, which every client is evaluated on.
    base_classes: np.ndarray | None = None
    novel_classes: np.ndarray | None = None
    base_test: np.ndarray | None = None
    novel_test: np.ndarray | None = None
    holdout_clients: np.ndarray | None = None  # clients that never train (partition.holdout_clients)
    # Leave-one-domain-out: every image of the held-out domain (of the trained classes), scored by every client.
    unseen_domain_test: np.ndarray | None = None

    def train_sizes(self) -> np.ndarray:
        return np.array([len(c.train) for c in self.clients], dtype=np.int64)

    def global_tests(self) -> list[np.ndarray]:
        """The test sets every client is scored on, besides its own (Base, Novel, the unseen domain)."""
        return [a for a in (self.base_test, self.novel_test, self.unseen_domain_test) if a is not None]


@dataclass(frozen=True)
class Candidates:
    """The samples a partitioner may give out, with what it may know of them. It sees no rank and no global RNG.

    With `subset` None every client's pool is later cut into train/val/test by fractions; otherwise each pool is
    split by `subset` (0 train, 1 val, 2 test), so partitioners that want a client's test set to follow its
    own distribution apply the same shares to every stratum (methods.md §1.6b, §1.6c)."""

    members: np.ndarray  # sorted listing indices that may reach a client
    labels: np.ndarray  # [N] of the whole listing
    domains: np.ndarray  # [N]
    domain_names: tuple[str, ...]
    client_domains: tuple[int, ...]  # the domains clients are made of: all but a held-out one
    class_names: tuple[str, ...]
    subset: np.ndarray | None  # [N] official (or seeded) split; None: cut each pool by fractions
    val_from_train: bool  # subset without a val part: each client's val is cut from its train
    # subset without a test part (PACS: its test lists hold the whole domain): each client's test is cut from its
    # train by test_fraction
    test_from_train: bool
    notes: dict

    def strata(self, idx: np.ndarray) -> list[np.ndarray]:
        if self.subset is None:
            return [idx]
        part = self.subset[idx]
        return [idx[part == s] for s in (TRAIN, VAL, TEST)]

    def n_train(self, idx: np.ndarray) -> int:
        return len(idx) if self.subset is None else int(np.count_nonzero(self.subset[idx] == TRAIN))

    def has_test(self, idx: np.ndarray) -> bool:
        """Whether a pool gets a test sample (always, when its test is cut by test_fraction)."""
        return self.subset is None or self.test_from_train or bool(np.any(self.subset[idx] == TEST))

    def classes(self) -> np.ndarray:
        return np.unique(self.labels[self.members])

    def train_minimum(self, cfg: PartitionConfig, at_least: int) -> int:
        """Training candidates a pool needs so that `at_least` training samples remain after the val/test cut."""
        if self.subset is None:
            keep = 1 - cfg.val_fraction - cfg.test_fraction
        else:
            keep = 1 - cfg.val_fraction * self.val_from_train - cfg.test_fraction * self.test_from_train
        return int(np.ceil(at_least / keep))
