"""The tables `qpart plan`, `qpart catalog` and `qpart-device --explain` print (qpart.common.table): columns
as wide as their content, a cell cut only past its column's limit and then with an ellipsis."""
from qpart.common import table, tensors
from qpart.common.table import BITS_WIDTH, ELLIPSIS, Column


def test_columns_fit_their_widest_cell():
    lines = table.render([Column("kind"), Column("n", ">")], [["uniform8+z", "7"], ["qpart", "1,234,567"]])
    assert lines == ["kind               n",
                     "uniform8+z         7",
                     "qpart      1,234,567"]


def test_a_cell_past_its_limit_ends_in_an_ellipsis():
    long = table.bits([8] * 40)
    (title, row) = table.render([Column("weight bits", max_width=BITS_WIDTH), Column("x")], [[long, "y"]])
    cell = row[:BITS_WIDTH]
    assert cell.endswith(ELLIPSIS) and long.startswith(cell[:-len(ELLIPSIS)]) and row[BITS_WIDTH:] == " y"
    assert table.fit("short", 5) == "short" and table.fit("longer", 5) == "lo..."


def _row(**changes) -> list[str]:
    fields = dict(chosen=False, rejected="", cut=7, kind="qpart", coding=tensors.RAW, quality=0, weight_bits=[5, 4],
                  activation_bits=[6], head_bytes=2087, uplink_bytes=316, total_time_s=0.024078, energy_j=0.00343,
                  server_cost=2.46e-05, objective=0.02754, drop=0.37)
    return table.candidate_row(**(fields | changes))


def test_the_candidate_table_aligns_every_row_and_keeps_the_reasons_whole():
    rows = [_row(chosen=True), _row(kind="uniform8", coding=tensors.ZLIB, weight_bits=[8] * 60, drop=None),
            _row(cut=0, kind="codec", coding=4, quality=75, rejected="certified drop 1.26 points exceeds the budget 1")]
    lines = table.candidate_table(rows, ["", "", "certified drop 1.26 points exceeds the budget 1"])
    assert len({len(line) for line in lines[:3]}) == 1           # right-aligned last column: one length
    assert lines[1].startswith("*") and "uniform8+z" in lines[2] and ELLIPSIS in lines[2]
    assert lines[2].rstrip().endswith("-")                          # drop unknown
    assert lines[3].endswith("  (certified drop 1.26 points exceeds the budget 1)") and lines[3].startswith("x")
    assert tensors.coding_label(4, 75) in lines[3]
