"""Text tables that fit their content: each column as wide as its title and widest cell, up to its
`max_width`; a cell longer than that is cut and ends in an ellipsis ("..."), never silently. ASCII only,
so that any terminal and any locale prints it.

    lines = render([Column("cut", ">"), Column("weight bits", max_width=32)], [["7", "[8, 6, 6]"]])

The planner's explain table (`qpart plan`, `qpart-device --explain`) is built here once, so that both
tools print the same columns: `candidate_row` per candidate, then `candidate_table`.
"""
from dataclasses import dataclass

from qpart.common import tensors

ELLIPSIS = "..."
BITS_WIDTH = 32        # a bit-width list wider than this is cut with the ellipsis (the chosen split's is printed whole)


@dataclass(frozen=True)
class Column:
    title: str
    align: str = "<"          # "<": left (text), ">": right (numbers)
    max_width: int = 0        # 0: as wide as the widest cell; else cells beyond it are cut with the ellipsis


def fit(text: str, width: int) -> str:
    """text, or its first characters and the ellipsis when it is longer than width."""
    if len(text) <= width:
        return text
    return text[:width - len(ELLIPSIS)] + ELLIPSIS if width > len(ELLIPSIS) else text[:width]


def bits(widths) -> str:
    """A list of bit widths as the tables show it: [8, 6, 6]."""
    return str([int(b) for b in widths])


def widths(columns: list[Column], rows: list[list[str]]) -> list[int]:
    out = []
    for i, column in enumerate(columns):
        widest = max([len(column.title)] + [len(row[i]) for row in rows])
        out.append(min(widest, max(column.max_width, len(column.title))) if column.max_width else widest)
    return out


def render(columns: list[Column], rows: list[list[str]], indent: str = "") -> list[str]:
    """The title line, then one line per row (cells as strings, one per column), columns one space apart."""
    sized = widths(columns, rows)

    def line(cells) -> str:
        return indent + " ".join(f"{fit(cell, w):{c.align}{w}}" for cell, c, w in zip(cells, columns, sized)).rstrip()
    return [line([c.title for c in columns])] + [line(row) for row in rows]


CANDIDATE_COLUMNS = [Column(""), Column("cut", ">"), Column("kind"), Column("weight bits", max_width=BITS_WIDTH),
                     Column("act bits", max_width=BITS_WIDTH), Column("head B", ">"), Column("up B", ">"),
                     Column("time ms", ">"), Column("energy J", ">"), Column("cost", ">"), Column("objective", ">"),
                     Column("drop", ">")]


def candidate_row(*, chosen: bool, rejected: str, cut: int, kind: str, coding: int, quality: int, weight_bits,
                  activation_bits, head_bytes: float, uplink_bytes: float, total_time_s: float, energy_j: float,
                  server_cost: float, objective: float, drop: float | None) -> list[str]:
    """One candidate's cells: kind is the split's ("qpart", "uniform8", ...), "+z" when its activations travel
    zlib-coded, or the image coding ("jpeg q75") when it sends the input as a file (kind "codec")."""
    label = tensors.coding_label(coding, quality) if kind == "codec" else kind + ("+z" if coding == tensors.ZLIB else "")
    return ["*" if chosen else ("x" if rejected else ""), str(cut), label, bits(weight_bits), bits(activation_bits),
            f"{int(head_bytes):,}", f"{int(uplink_bytes):,}", f"{total_time_s * 1e3:.3f}", f"{energy_j:.3g}",
            f"{server_cost:.3g}", f"{objective:.4g}", "-" if drop is None else f"{drop:.2f}"]


def candidate_table(rows: list[list[str]], rejected: list[str], indent: str = "") -> list[str]:
    """The title line and one line per candidate, each ending in why it was not eligible, if it was not."""
    lines = render(CANDIDATE_COLUMNS, rows, indent)
    return lines[:1] + [line + (f"  ({why})" if why else "") for line, why in zip(lines[1:], rejected)]
