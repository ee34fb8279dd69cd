"""`python -m hpcfed ...` is the `hpcfed` command."""

from hpcfed.cli import main

main(prog_name="hpcfed")
