"""The pipeline's stage table: the order the docs describe, each stage reading only earlier outputs, and the
table check refusing a table that breaks that (so adding a row in the wrong place fails at import)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from distill.errors import StageError
from distill.run.table import LLM_STAGES, PIPELINE, STAGES, check_table


def test_the_stages_run_in_the_documented_order() -> None:
    assert STAGES == ("enrich", "propose", "ground", "behaviour", "similarity", "candidates", "verify", "rank",
                      "prune")
    assert LLM_STAGES == {"enrich", "propose", "ground", "verify"}
    assert {stage.name: stage.inputs for stage in PIPELINE}["candidates"] == ("ground", "behaviour", "similarity")


def test_the_table_check_refuses_an_input_no_earlier_stage_writes() -> None:
    check_table(PIPELINE)
    by_name = {stage.name: stage for stage in PIPELINE}
    early_verify = [by_name["enrich"], by_name["verify"], *(s for s in PIPELINE if s.name not in ("enrich", "verify"))]
    with pytest.raises(StageError, match="'verify' reads \\['candidates'\\]"):
        check_table(early_verify)
    with pytest.raises(StageError, match="appears twice"):
        check_table([*PIPELINE, replace(by_name["prune"], inputs=())])
