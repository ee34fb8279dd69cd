"""The extract stage: compute the frozen prefix of the image tower once per image (and view), store it in an
HDF5 cache keyed by everything it depends on, and let training start from it (`extract.enabled`)."""

from hpcfed.extract.cache import FeatureSource
from hpcfed.extract.prefix import CachedVisual, Cut, TextPrefixCache, find_cut

__all__ = ["CachedVisual", "Cut", "FeatureSource", "TextPrefixCache", "find_cut"]
