"""Reading files written by torch.save (model weights, resume checkpoints) safely, with failures in a user's words.

Only tensors and plain containers are unpickled (weights_only): any other pickled object could run code while
it loads, so such a file is refused, never loaded another way."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any


class UnreadableTorchFile(Exception):
    """Why a file cannot be read; the text continues "<file> ...", e.g. "is empty (0 bytes)". `damaged`: its
    bytes are broken (empty, truncated); else they are intact but hold something that is not only tensors."""

    def __init__(self, reason: str, damaged: bool):
        self.damaged = damaged
        super().__init__(reason)


def load_torch_file(source: Path | bytes, mmap: bool = True) -> Any:
    """torch.load of a path (memory-mapped: tensor data is not read until used) or of bytes already read.
    Raises UnreadableTorchFile saying what is wrong with it."""
    import torch

    try:
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
    except OSError as e:
        raise UnreadableTorchFile(f"cannot be read ({e.strerror})", damaged=True) from None
    if size == 0:
        raise UnreadableTorchFile("is empty (0 bytes)", damaged=True)
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    if _is_torchscript(stream):
        raise UnreadableTorchFile("is a TorchScript archive (torch.jit.save), not a file of tensors", damaged=False)
    # mmap needs torch's zip format; the legacy format (and bytes) are read whole
    use_mmap = mmap and not isinstance(source, bytes) and zipfile.is_zipfile(source)
    try:
        return torch.load(stream, map_location="cpu", weights_only=True, mmap=use_mmap)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError... by format
        raise UnreadableTorchFile(*_reason(e)) from None


def _is_torchscript(stream: Path | io.BytesIO) -> bool:
    try:
        if not zipfile.is_zipfile(stream):
            return False
        with zipfile.ZipFile(stream) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    finally:
        if isinstance(stream, io.BytesIO):
            stream.seek(0)  # is_zipfile and ZipFile move it


def _reason(error: Exception) -> tuple[str, bool]:
    """torch's error as a short reason. Its own text for a refused pickle advises loading with weights_only=False,
    which would run the code: only the name of the refused object is kept."""
    text = str(error)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return (f"holds the Python object {refused.group(1)}, which hpcfed does not unpickle: unpickling anything "
                "but tensors and plain containers could run code"), False
    unpickler = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    if unpickler:
        return f"holds a pickle that is not plain tensors and containers ({unpickler.group(1)[:120]})", False
    if isinstance(error, EOFError):
        return "is truncated (it ends in the middle of its data)", True
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    short = first_line.split(". This is an internal")[0][:160]  # miniz's advice adds nothing to 'truncated'
    if not isinstance(error, RuntimeError):
        short = f"{type(error).__name__} {short}".strip()
    return f"is truncated or not a file written by torch.save ({short})", True
