"""Methods by name. Every module of this folder is imported here, so a method registered in a new module
(`@METHODS.register("name")`) is available without another line anywhere."""

import importlib
import pkgutil

from hpcfed.methods.base import METHODS, Method

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method"]
