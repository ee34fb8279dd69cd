"""Bad config input (issue #19, config part): each case is refused while the config is resolved, before any
compute, with exit code 2 and one first line that names the key, the problem and the fix; the config file's
bytes are unchanged and no file is created. Every case fails before MPI, so all run in this process."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from badinput import assert_refused, fingerprint, run_in_process

VALID = """\
name: t
rounds: 2
clients: 4
model:
  name: hpcfed-tiny
method:
  name: pfedmma
  alpha: 0.001
train:
  lr: 0.01
  batch_size: 8
"""


@dataclass
class Case:
    name: str
    files: dict[str, str | bytes]  # written into an empty folder; the command reads bad.yaml
    args: list[str]  # after the verb and bad.yaml
    problem: str  # substrings of the first line: the key and the problem ...
    fix: str  # ... and the fix
    verb: str = "train"


def bad(text: str) -> dict[str, str]:
    return {"bad.yaml": text}


PRINT = ["--print-config"]
EMPTY_FIX = "Fix: write the run's settings as key: value lines"
SECTION_FIX = "delete the 'model:' line to use the defaults"
FINITE_FIX = "Fix: write a finite number"

CASES = [
    # 1. an empty config file
    Case("empty-0-bytes", bad(""), [], "at 'bad.yaml': the config file is empty (0 bytes)", EMPTY_FIX),
    Case("empty-only-comments", bad("# rounds: 5\n\n# model: {}\n"), [],
         "at 'bad.yaml': the config file is empty (only comments or null)", EMPTY_FIX, verb="split"),
    Case("empty-null", bad("null\n"), PRINT, "the config file is empty (only comments or null)", EMPTY_FIX),
    # 2. a section that is present but empty, or not a mapping
    Case("section-model-commented-out", bad(VALID.replace("  name: hpcfed-tiny", "#  name: hpcfed-tiny")), [],
         "at 'model': the section is empty in bad.yaml", "Fix: give 'model' its keys, or " + SECTION_FIX),
    Case("section-train-empty", bad(VALID.replace("  lr: 0.01\n  batch_size: 8\n", "")), [],
         "at 'train': the section is empty in bad.yaml", "delete the 'train:' line", verb="split"),
    Case("section-data-empty", bad(VALID + "data:\n  # root: /scratch/data\n"), PRINT,
         "at 'data': the section is empty", "delete the 'data:' line"),
    Case("section-recipe-empty", bad(VALID + "recipes:\n  pfedmma:\n"), PRINT,
         "at 'recipes.pfedmma': the section is empty", "give 'recipes.pfedmma' its keys"),
    Case("section-model-scalar", bad(VALID.replace("model:\n  name: hpcfed-tiny", "model: 5")), [],
         "at 'model': a section must be a mapping of keys, got 5", "Fix: write its keys indented under 'model:'"),
    Case("section-method-scalar-override", bad(VALID), ["-o", "method=5"],
         "at 'method': a section must be a mapping of keys, got 5", "indented under 'method:'"),
    Case("section-model-empty-override", bad(VALID), ["-o", "model="], "at 'model': the section is empty",
         SECTION_FIX, verb="split"),
    # 3. a key given twice, at any depth; YAML syntax errors
    Case("duplicate-train-lr", bad(VALID + "  lr: 0.1\n"), [],
         "at 'train.lr': given twice in bad.yaml (lines 10 and 12)", "Fix: delete one of the two 'lr:' lines"),
    Case("duplicate-top-level", bad(VALID + "rounds: 20\n"), [],
         "at 'rounds': given twice in bad.yaml (lines 2 and 12)", "delete one of the two 'rounds:' lines",
         verb="split"),
    Case("duplicate-method-option", bad(VALID.replace("  alpha: 0.001\n", "  alpha: 0.001\n  alpha: 0.01\n")),
         PRINT, "at 'method.alpha': given twice in bad.yaml (lines 8 and 9)", "delete one of the two 'alpha:'"),
    Case("duplicate-flow-mapping", bad(VALID + "partition: {beta: 0.5, beta: 1.0}\n"), [],
         "at 'partition.beta': given twice in bad.yaml (both on line 12)", "delete one of the two 'beta:'"),
    Case("duplicate-in-base-file", {"bad.yaml": "base: common.yaml\nrounds: 3\n",
                                    "common.yaml": VALID.replace("  batch_size: 8\n", "  batch_size: 8\n  lr: 1\n")},
         [], "at 'train.lr': given twice in common.yaml (lines 10 and 12)", "delete one of the two 'lr:' lines"),
    Case("duplicate-in-override-value", bad(VALID), ["-o", "train={lr: 0.1, lr: 0.2}"],
         "at 'train.lr': given twice in -o train={lr: 0.1, lr: 0.2}", "delete one of the two 'lr:' lines"),
    Case("syntax-unclosed-bracket", bad(VALID + "data:\n  domains: [a, b\n"), [],
         "at 'bad.yaml:14': not valid YAML: expected ',' or ']'", "Fix: correct the YAML at that line"),
    Case("syntax-tab-indent", bad(VALID.replace("  batch_size", "\tbatch_size")), [],
         "at 'bad.yaml:11': not valid YAML: found character '\\t' that cannot start any token",
         "correct the YAML at that line", verb="split"),
    Case("syntax-missing-colon", bad(VALID.replace("clients: 4", "clients 4")), PRINT,
         "at 'bad.yaml:4': not valid YAML", "correct the YAML at that line"),
    Case("syntax-override", bad(VALID), ["-o", "data.domains=[a,"],
         "at '-o data.domains=[a,': not valid YAML", "-o 'data.domains=[a, b]'"),
    # 4. non-finite numbers, wherever they come from
    Case("nonfinite-file-lr", bad(VALID.replace("lr: 0.01", "lr: .inf")), [],
         "at 'train.lr': must be a finite number, got inf (in bad.yaml)", FINITE_FIX),
    Case("nonfinite-file-list", bad(VALID + "  adam_betas: [0.9, .nan]\n"), [],
         "at 'train.adam_betas[1]': must be a finite number, got nan (in bad.yaml)", FINITE_FIX, verb="split"),
    Case("nonfinite-file-method-option", bad(VALID.replace("alpha: 0.001", "alpha: -.inf")), PRINT,
         "at 'method.alpha': must be a finite number, got -inf (in bad.yaml)", FINITE_FIX),
    Case("nonfinite-file-recipe", bad(VALID + "recipes:\n  pfedmma:\n    lr: .NaN\n"), [],
         "at 'recipes.pfedmma.lr': must be a finite number, got nan (in bad.yaml)", FINITE_FIX),
    Case("nonfinite-override-lr", bad(VALID), ["-o", "train.lr=.inf"],
         "at 'train.lr': must be a finite number, got inf (set by -o train.lr=.inf)", FINITE_FIX),
    Case("nonfinite-override-method-option", bad(VALID), ["-o", "method.alpha=.nan"],
         "at 'method.alpha': must be a finite number, got nan (set by -o method.alpha=.nan)", FINITE_FIX),
    Case("nonfinite-override-recipe", bad(VALID), ["-o", "recipes.pfedmma.lr=-.inf"],
         "at 'recipes.pfedmma.lr': must be a finite number, got -inf", FINITE_FIX, verb="split"),
    Case("nonfinite-override-rounds", bad(VALID), ["-o", "rounds=.inf"],
         "at 'rounds': must be a finite number, got inf", FINITE_FIX),
    # 5. train.eval_clients out of range: negative, or more clients than the run has
    Case("eval-clients-negative", bad(VALID), ["-o", "train.eval_clients=-1"],
         "at 'train.eval_clients': must be >= 0, got -1", "use 0 to evaluate every client"),
    Case("eval-clients-above-clients", bad(VALID + "  eval_clients: 5\n"), [],
         "at 'train.eval_clients': samples 5 clients per evaluation round, but the run has only 4",
         "use at most 4", verb="split"),
    # unreadable files and a bad base: one line, never a traceback
    Case("not-utf8", {"bad.yaml": b"rounds: 2\n\xff\xfe\n"}, [], "at 'bad.yaml': the config file is not UTF-8 text",
         "Fix: pass the YAML config file"),
    Case("base-not-a-path", bad("base: 5\n" + VALID), [], "at 'bad.yaml: base': expected the path of another YAML",
         "write e.g. base: common.yaml", verb="split"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_config_is_refused_in_one_line_naming_key_problem_and_fix(case: Case, tmp_path):
    for name, content in case.files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = fingerprint(tmp_path)  # the folder: the config is unchanged and no run file appears
    outcome = run_in_process([case.verb, "bad.yaml", *case.args], cwd=tmp_path)
    assert_refused(outcome, 2, case.problem, case.fix, untouched=before)
    assert outcome.first_line.startswith("hpcfed: config error at '"), outcome.first_line


def test_the_valid_config_of_these_cases_resolves(tmp_path):
    """The cases differ from VALID only by their bad input: VALID itself is accepted."""
    (tmp_path / "good.yaml").write_text(VALID)
    outcome = run_in_process(["train", "good.yaml", "--print-config"], cwd=tmp_path)
    assert outcome.code == 0 and "stop here" not in outcome.out, outcome.out + outcome.err
