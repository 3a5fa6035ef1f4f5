"""The CLI's console: tables keep their names whole, and piped output is not cut at 80 columns."""

from __future__ import annotations

import io

from rich.table import Table

from recmas_graph.cli._output import NAME_WIDTH, PIPE_WIDTH, FittingConsole


def _table(*names: str) -> Table:
    table = Table("system", "acc %", "p", "norm %", "NLL", "tok/q", "s/q", box=None)
    for name in names:
        table.add_row(name, "42.5±2.1", "0.648", "41.0±0.0", "5.49", "120.25", "1.83")
    return table


def _printed(console_width: int | None, table: Table) -> str:
    out = io.StringIO()
    console = FittingConsole(file=out, **({"width": console_width} if console_width else {}))
    console.print(table)
    return out.getvalue()


def test_a_name_is_never_cut_with_an_ellipsis_in_80_columns() -> None:
    text = _printed(80, _table("sequential_light_mini", "sequential_light_mini_trained:single"))
    assert "…" not in text
    assert "sequential_light_mini_trained:single" in text  # whole, on one line
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_name_longer_than_the_name_width_folds_instead_of_being_cut() -> None:
    name = "x" * (NAME_WIDTH + 15)
    text = _printed(80, _table(name))
    assert "…" not in text
    assert "".join(line.split()[0] for line in text.splitlines() if line.strip().startswith("x")) == name


def test_output_that_is_not_a_terminal_is_wider_than_80(monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    console = FittingConsole(file=io.StringIO())
    assert not console.is_terminal and console.width == PIPE_WIDTH
    monkeypatch.setenv("COLUMNS", "90")
    assert FittingConsole(file=io.StringIO()).width == 90  # the user's word wins
