"""ImageFolder reading, image decoding and the partitioners the foundation uses."""

import numpy as np
import pytest

from hpcfed.config import PartitionConfig
from hpcfed.data import load_listing
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.errors import ConfigError, DataError, SplitError
from hpcfed.split import make_splits

from conftest import make_image_tree


def test_imagefolder_with_domains_lists_classes_domains_and_counts(tmp_path):
    root = make_image_tree(tmp_path / "t", domains=("art", "photo"), classes=("cat", "ice_cream"), per_class=5)
    listing = read_imagefolder(root, domain_level=True)
    assert listing.domain_names == ("art", "photo")
    assert listing.class_names == ("cat", "ice cream")
    assert len(listing) == 20
    assert np.bincount(listing.labels).tolist() == [10, 10]
    assert np.bincount(listing.domains).tolist() == [10, 10]


def test_imagefolder_without_domains_and_with_a_class_name_file(tmp_path):
    root = make_image_tree(tmp_path / "t", domains=("only",), classes=("n01", "n02"), per_class=3) / "only"
    names = tmp_path / "names.txt"
    names.write_text("n01\tgoldfish\nn02\tgreat white shark\n")
    listing = read_imagefolder(root, class_names_file=names)
    assert listing.class_names == ("goldfish", "great white shark")
    assert listing.domain_names == ("all",) and len(listing) == 6


@pytest.mark.parametrize("problem", ["missing_root", "missing_domain", "classes_differ", "unnamed_class"])
def test_bad_trees_fail_with_a_message_naming_the_problem(tmp_path, problem):
    root = make_image_tree(tmp_path / "t", domains=("a", "b"), classes=("x", "y"), per_class=2)
    if problem == "missing_root":
        with pytest.raises(DataError, match="does not exist"):
            read_imagefolder(tmp_path / "nope")
    elif problem == "missing_domain":
        with pytest.raises(DataError, match="available domains"):
            read_imagefolder(root, domains=["a", "c"])
    elif problem == "classes_differ":
        (root / "b" / "z").mkdir()
        with pytest.raises(DataError, match="classes differ between domains"):
            read_imagefolder(root, domain_level=True)
    else:
        names = tmp_path / "names.txt"
        names.write_text("x\tthe x\n")
        with pytest.raises(DataError, match=r"no name for class folder\(s\) \['y'\]"):
            read_imagefolder(root, domains=["a"], class_names_file=names)


def test_listing_digest_changes_when_the_listing_changes(tmp_path):
    root = make_image_tree(tmp_path / "t", per_class=3)
    before = read_imagefolder(root, domain_level=True).digest()
    assert before == read_imagefolder(root, domain_level=True).digest()
    (root / "a" / "cat" / "000.png").unlink()
    assert read_imagefolder(root, domain_level=True).digest() != before


def test_unknown_dataset_is_refused():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet-21k'") as err:
        load_listing("imagenet-21k")
    assert err.value.key == "data.dataset" and "office_home" in str(err.value)  # names the known ones


def test_corrupt_image_names_the_file(tmp_path):
    from hpcfed.data.images import ImageSource
    from hpcfed.models import create_backbone

    root = make_image_tree(tmp_path / "t", per_class=2)
    (root / "a" / "cat" / "001.png").write_bytes(b"not a png")
    listing = read_imagefolder(root, domain_level=True)
    _, preprocess, _ = create_backbone("hpcfed-tiny", None)
    source = ImageSource(listing, preprocess)
    assert source.batch(np.array([0])).shape == (1, 3, 64, 64)
    with pytest.raises(DataError, match="001.png"):
        source.batch(np.array([1]))


@pytest.fixture
def listing(tmp_path):
    return read_imagefolder(make_image_tree(tmp_path / "t", domains=("a", "b", "c"), per_class=20), domain_level=True)


@pytest.mark.parametrize("scheme,clients", [("iid", 5), ("dirichlet", 4), ("domain_dirichlet", 6)])
def test_splits_use_each_sample_once_and_follow_the_seed(listing, scheme, clients):
    cfg = PartitionConfig(scheme=scheme, clients_per_domain=2, beta=0.5)
    splits = make_splits(listing, cfg, clients, seed=0)
    every = np.concatenate([np.concatenate([c.train, c.val, c.test]) for c in splits.clients])
    assert len(every) == len(set(every.tolist())) == len(listing)
    assert all(len(c.train) >= cfg.min_samples and len(c.test) >= 1 for c in splits.clients)
    again = make_splits(listing, cfg, clients, seed=0)
    other = make_splits(listing, cfg, clients, seed=1)
    assert all(np.array_equal(a.train, b.train) for a, b in zip(splits.clients, again.clients, strict=True))
    assert any(not np.array_equal(a.train, b.train) for a, b in zip(splits.clients, other.clients, strict=True))


def test_domain_partition_keeps_clients_inside_their_domain(listing):
    splits = make_splits(listing, PartitionConfig(scheme="domain_dirichlet", clients_per_domain=2), 6, seed=0)
    for c in splits.clients:
        assert set(listing.domains[np.concatenate([c.train, c.test])].tolist()) == {c.domain}
    assert [c.domain for c in splits.clients] == [0, 0, 1, 1, 2, 2]


def test_domain_partition_needs_matching_client_count(listing):
    with pytest.raises(SplitError, match="clients: 6"):
        make_splits(listing, PartitionConfig(scheme="domain_dirichlet", clients_per_domain=2), 5, seed=0)


def test_clients_spread_over_domains_by_size(tmp_path):
    root = make_image_tree(tmp_path / "t", domains=("a", "b", "c", "d"), per_class=20)
    for image in sorted((root / "a").rglob("*.png"))[:30]:
        image.unlink()  # domain a: 30 images, the others 60
    listing = read_imagefolder(root, domain_level=True)
    splits = make_splits(listing, PartitionConfig(scheme="domain_dirichlet", clients_per_domain=0), 10, seed=0)
    counts = np.bincount([c.domain for c in splits.clients], minlength=4)
    assert counts.sum() == 10 and counts.min() >= 1
    assert counts[0] == counts.min()
    with pytest.raises(SplitError, match="cannot cover 4 domains"):
        make_splits(listing, PartitionConfig(scheme="domain", clients_per_domain=0), 3, seed=0)
