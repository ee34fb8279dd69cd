"""No process pool in hpcfed forks the calling process: a fork of a process that already runs threads (torch,
matplotlib, PNG-writer threads) copies their held locks, and a worker hung for ever on one in a real build."""

from __future__ import annotations

import ast
from pathlib import Path

from hpcfed.builders.tree import process_pool

REPO = Path(__file__).resolve().parents[1]
SAFE_METHODS = {"spawn", "forkserver"}
POOLS = {"Pool", "ProcessPoolExecutor"}


def _name(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _safe_context(node: ast.AST | None) -> bool:
    """`get_context("spawn")` or `get_context("forkserver")`, written at the call itself."""
    return (isinstance(node, ast.Call) and _name(node.func) == "get_context" and len(node.args) == 1
            and isinstance(node.args[0], ast.Constant) and node.args[0].value in SAFE_METHODS)


def unsafe_pools(source: str, filename: str) -> list[str]:
    """file:line of every Pool(...) / ProcessPoolExecutor(...) not started by a spawn or forkserver context."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call) or _name(node.func) not in POOLS:
            continue
        if _name(node.func) == "Pool":
            safe = isinstance(node.func, ast.Attribute) and _safe_context(node.func.value)
        else:
            safe = any(k.arg == "mp_context" and _safe_context(k.value) for k in node.keywords)
        if not safe:
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_check_tells_safe_from_forking_pools():
    bad = ("import multiprocessing as mp\nfrom multiprocessing import Pool\nfrom concurrent import futures\n"
           "mp.Pool(2)\nPool(2)\nmp.get_context('fork').Pool(2)\nfutures.ProcessPoolExecutor(2)\n"
           "ctx = mp.get_context('spawn')\nctx.Pool(2)\n")
    assert unsafe_pools(bad, "bad.py") == [f"bad.py:{n}" for n in (4, 5, 6, 7, 9)]
    good = ("import multiprocessing as mp\nfrom concurrent import futures\nmp.get_context('forkserver').Pool(2)\n"
            "futures.ProcessPoolExecutor(2, mp_context=mp.get_context('spawn'))\nfutures.ThreadPoolExecutor(4)\n")
    assert unsafe_pools(good, "good.py") == []


def test_no_process_pool_forks_the_caller():
    found = []
    for folder in ("hpcfed", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            found += unsafe_pools(path.read_text(), str(path.relative_to(REPO)))
    assert not found, (
        f"process pools that fork the caller at {found}: use hpcfed.builders.tree.process_pool, or pass "
        "multiprocessing.get_context('forkserver') (or 'spawn') at the call; workers must be top-level functions"
    )


def test_builder_pool_runs_top_level_functions_in_forkserver_workers():
    with process_pool(2) as pool:
        assert pool._ctx.get_start_method() == "forkserver"
        assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
