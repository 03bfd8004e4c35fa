"""README's model table and docs/architecture.md's counts are `ghostnest models` output (benchmarks/docs_tables.py
writes them): a row that differs from the tool's figures, or a model missing, fails here. One case per model, so
each stays a few seconds (counting is on the meta device)."""
from __future__ import annotations

import pytest
from helpers import load_benchmark_script

from ghostnest import cli, list_models

tables = load_benchmark_script("docs_tables")
HINT = "the docs differ from `ghostnest models`: run python benchmarks/docs_tables.py"


def readme_lines() -> list[str]:
    block = tables.current_block(tables.README, "models")
    assert block is not None, "README.md lost its <!-- models:begin/end --> markers"
    return block.splitlines()


@pytest.mark.parametrize("name", list_models())
def test_the_readme_row_of_each_model_is_the_tools(name):
    (row,) = cli.model_rows(name)
    assert tables.readme_row(row) in readme_lines(), HINT


def test_the_readme_table_lists_every_model_once_in_the_tools_order():
    lines = readme_lines()
    assert lines[:2] == tables.readme_table([]).splitlines()
    assert [line.split("`")[1] for line in lines[2:]] == list_models(), HINT


def test_the_architecture_counts_are_the_tools():
    rows = [r for size in tables.SIZES for name in (f"menest_ghost_{size}", f"efficientnetv2_{size}")
            for r in cli.model_rows(name)]
    assert tables.current_block(tables.ARCHITECTURE, "menest-counts") == tables.counts_table(rows), HINT
