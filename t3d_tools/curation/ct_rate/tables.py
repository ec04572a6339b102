"""The CSVs of a CT-RATE split read into plain dictionaries keyed by ``VolumeName``, with the input contract enforced
as one-line errors: a missing column, a repeated volume name, a volume name not in CT-RATE's form, a label that is
not 0/1, a metadata row with a spacing that is not a positive number."""

from __future__ import annotations

import ast
import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from custom.errors import DataError
from t3d_tools.curation.bimcv.sources import read_csv_text
from t3d_tools.curation.ct_rate.layout import CtRateColumns, parse_volume_name

__all__ = ["Table", "read_table", "read_label_table", "Geometry", "geometry_of"]


@dataclass
class Table:
    """``rows[volume name] = (line, {column: value})``; ``header`` in file order."""

    path: str
    header: list[str]
    rows: dict[str, tuple[int, dict[str, str]]]

    def where(self, name: str) -> str:
        return f"{self.path}:{self.rows[name][0]}"


def read_table(path: str, required: dict[str, str], volume_column: str) -> Table:
    """Rows keyed by ``volume_column``; ``required`` maps an option name (``columns`` key) to a column it needs."""
    reader = csv.DictReader(io.StringIO(read_csv_text(path), newline=""))
    header = reader.fieldnames or []
    for option, column in {"volume": volume_column, **required}.items():
        if column not in header:
            raise DataError(
                f"{path}: expected column '{column}' (columns option '{option}'), found columns {header[:12]}"
                + (" ..." if len(header) > 12 else "")
            )
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    line = reader.line_num + 1
    for row in reader:  # a quoted report may span lines: a row's line is where it starts
        values = {k: (v if v is not None else "") for k, v in row.items() if k is not None}
        name = values[volume_column].strip()
        parse_volume_name(name, f"{path}:{line} column {volume_column}")
        if name in rows:
            raise DataError(
                f"{path}:{line}: expected each {volume_column} once, found '{name}' again "
                f"(first at line {rows[name][0]})"
            )
        rows[name] = (line, values)
        line = reader.line_num + 1
    return Table(path, list(header), rows)


def read_label_table(path: str, volume_column: str, label_names: Sequence[str] | None) -> tuple[Table, list[str]]:
    """The labels CSV and its label names (every column but the volume's, in file order, unless ``label_names``);
    each cell must be 0 or 1."""
    table = read_table(path, {f"label '{n}'": n for n in label_names or []}, volume_column)
    names = list(label_names) if label_names else [c for c in table.header if c != volume_column]
    if not names:
        raise DataError(f"{path}: expected label columns besides '{volume_column}', found none")
    for line, values in table.rows.values():
        for label in names:
            cell = values[label].strip()
            if cell not in ("0", "1", "0.0", "1.0"):
                raise DataError(f"{path}:{line} column '{label}': expected 0 or 1, found {cell!r}")
    return table, names


@dataclass(frozen=True)
class Geometry:
    """What the metadata CSV says about one volume: spacing ``(x, y, z)`` mm, the rescale to HU, and the DICOM
    origin / direction cosines when the CSV has them (``None`` otherwise)."""

    spacing: tuple[float, float, float]
    slope: float
    intercept: float
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: expected {what}, found {text!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: expected {what}, found {text!r}")
    return value


def _number_list(text: str, where: str, what: str, count: int) -> list[float]:
    """``"[0.75, 0.75]"`` (the CSV's list form) -> floats."""
    try:
        parsed = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        parsed = None
    if not isinstance(parsed, (list, tuple)) or len(parsed) != count:
        raise DataError(f"{where}: expected {what} as a list of {count} numbers like '[0.75, 0.75]', found {text!r}")
    return [_number(str(v), where, what) for v in parsed]


def geometry_of(table: Table, name: str, columns: CtRateColumns) -> Geometry:
    """The metadata row of ``name``; a spacing that is zero, negative or not a number stops with one line."""
    line, row = table.rows[name]
    where = f"{table.path}:{line}"
    xy = _number_list(row[columns.xy_spacing], f"{where} column {columns.xy_spacing}", "the in-plane spacing", 2)
    z = _number(row[columns.z_spacing], f"{where} column {columns.z_spacing}", "the slice spacing")
    for column, value in ((columns.xy_spacing, min(xy)), (columns.z_spacing, z)):
        if value <= 0:
            raise DataError(f"{where} column {column}: expected a positive spacing in mm, found {value:g}")
    slope = _number(row[columns.slope], f"{where} column {columns.slope}", "a rescale slope")
    if slope == 0:
        raise DataError(f"{where} column {columns.slope}: expected a non-zero rescale slope, found 0")
    intercept = _number(row[columns.intercept], f"{where} column {columns.intercept}", "a rescale intercept")
    position = orientation = None
    if row.get(columns.position, "").strip() and row.get(columns.orientation, "").strip():
        position = tuple(_number_list(row[columns.position], f"{where} column {columns.position}", "a position", 3))
        orientation = tuple(
            _number_list(row[columns.orientation], f"{where} column {columns.orientation}", "direction cosines", 6)
        )
    return Geometry((xy[0], xy[1], z), slope, intercept, position, orientation)  # type: ignore[arg-type]
