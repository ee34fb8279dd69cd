"""Every error a user can cause, in one place. Each names the input, the problem and the fix; the runtime
stops every rank cleanly on a `UserError` (one line, no traceback), and reports anything else as a bug."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, data, run file, checkpoint, cache): printed as one line, exit code 2."""


class ConfigError(UserError, ValueError):
    """A bad configuration value. `key` is the dotted path; the message says what is wrong and how to fix it."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        super().__init__(f"config error at '{key}': {problem}. Fix: {fix}")


class ConfigProblems(ConfigError):
    """Several bad values found in one pass, so that one attempt shows them all: the first line names the first
    problem and how many there are, each other problem follows on a line of its own."""

    def __init__(self, problems: list[ConfigError]):
        self.problems = problems
        self.key = problems[0].key
        others = "".join(f"\n  {i}. {p}" for i, p in enumerate(problems[1:], 2))
        UserError.__init__(self, f"{len(problems)} problems, the first: {problems[0]}{others}")


class DataError(UserError, ValueError):
    """A dataset on disk is missing, malformed or inconsistent; the message names the path and the fix."""


class CacheError(DataError):
    """A feature cache that is stale, damaged or cannot be written."""


class SplitError(UserError, ValueError):
    """The data cannot be partitioned as configured; the message says why and what to change."""


class RunFileExists(UserError, FileExistsError):
    """A run file that would be replaced or that cannot be used as asked."""


class RunFileDamaged(UserError, OSError):
    """A run file that cannot be read safely (truncated, not HDF5, held by a writer that does not share it)."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, damaged or made by another experiment."""


class CheckpointOfAnotherConfig(CheckpointError):
    """A checkpoint made by another experiment: its fix is the config, not another checkpoint."""


class ReportError(UserError, ValueError):
    """Run files that cannot be reported (unreadable, not a run file, nothing to show)."""


class StatusError(UserError, ValueError):
    """A run file whose status cannot be read."""
