"""The fast CI subset of the fuzzer (tests/fuzzing.py): seeded, so every run checks the same
cases; bench/fuzz.py runs hundreds more. A failure names the case and how to reproduce it."""
from __future__ import annotations

import pytest

import fuzzing

SEED = 12
CASES = 60  # about 20 s on the development machine; every family comes up several times


def _label(case: fuzzing.Case) -> str:
    return f"{case.index}-{case.family}"


@pytest.mark.parametrize("case", fuzzing.generate(SEED, CASES), ids=_label)
def test_promise_holds(tmp_path, case):
    outcome = fuzzing.check(case, tmp_path)
    assert not outcome.violations, (
        f"{case.family}: {case.name}: {'; '.join(outcome.violations)}\nstderr: {outcome.stderr[-1000:]}\n"
        f"reproduce: python bench/fuzz.py --seed {SEED} --cases {CASES} --case {case.index}")


def test_generation_is_deterministic():
    first = [(c.family, c.name) for c in fuzzing.generate(3, 40)]
    assert first == [(c.family, c.name) for c in fuzzing.generate(3, 40)]
    assert {f for f, _ in first} == {"bytes", "structure", "options", "data", "eval"}
    again = fuzzing.case_at(3, 17, 40)
    assert (again.family, again.name) == first[17]
