"""Tab-separated tables of a BIMCV MIDS tree, read strictly, with column names that vary between releases.

Real releases rename columns (``Report`` vs ``report``, ``participant`` vs ``participant_id``) and contain the odd row
in a legacy encoding. :func:`read_tsv` therefore checks the header against the configured names (one-line
:class:`DataError` naming the missing column and the option that sets it) and returns rows that are not valid UTF-8
separately instead of failing the whole file, so the curation can exclude just those studies with a reason.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from custom.errors import DataError

__all__ = ["BimcvColumns", "TsvRow", "read_tsv"]


@dataclass(frozen=True)
class BimcvColumns:
    """Column names of the BIMCV tables; override any of them with ``BimcvColumns.from_overrides({...})``."""

    participant: str = "participant"  # participants.tsv
    age: str = "age"  # participants.tsv, a list string such as "[67]"
    gender: str = "gender"  # participants.tsv
    session_id: str = "session_id"  # sub-*_sessions.tsv
    study_date: str = "study_date"  # sub-*_sessions.tsv, YYYYMMDD
    report_id: str = "ReportID"  # labels TSV, the session id
    patient_id: str = "PatientID"  # labels TSV, the subject id
    report: str = "Report"  # labels TSV, Spanish report text
    labels: str = "Labels"  # labels TSV, list string of PadChest/UMLS terms
    ehr_participant: str = "participant"  # derivatives/EHR/sil_reg_*.tsv
    ehr_result: str = "result"  # POSITIVO / NEGATIVO
    partition_subject: str = "subject"  # derivatives/partitions.tsv
    partition_session: str = "session"
    partition_filepath: str = "filepath"

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, str] | None) -> BimcvColumns:
        """Defaults with ``overrides`` (option name -> column name) applied; unknown option names are an error."""
        overrides = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise DataError(f"columns: expected option names among {sorted(known)}, found {unknown}")
        return cls(**{**asdict(cls()), **overrides})

    def option_of(self, column: str) -> str:
        """The option name that sets ``column`` (for error messages)."""
        return next((name for name, value in asdict(self).items() if value == column), column)


@dataclass
class TsvRow:
    """One data row: ``line`` is its 1-based line in the file; ``values`` maps column -> text.

    ``utf8`` is False when the row held bytes that are not UTF-8; its values are then decoded with
    ``surrogateescape`` so ASCII identifiers still read correctly while the text fields must not be used.
    """

    line: int
    values: dict[str, str]
    utf8: bool = True


def _has_undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def read_tsv(path: str, required: Mapping[str, str] | None = None) -> tuple[list[str], list[TsvRow]]:
    """Read a TSV; returns ``(header, rows)``.

    Args:
        path: the file.
        required: ``{option name: column}`` that the header must contain; a missing one raises a one-line
            :class:`DataError` naming the file, the column and the option that sets it.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: table not found") from None
    text = raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header = [name.strip() for name in next(reader, [])]
    for option, column in (required or {}).items():
        if column not in header:
            raise DataError(f"{path}: expected column '{column}' (option '{option}'), found columns {header}")
    rows = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        line = reader.line_num
        values = {name: (cells[i] if i < len(cells) else "") for i, name in enumerate(header)}
        rows.append(TsvRow(line=line, values=values, utf8=not any(_has_undecodable(cell) for cell in cells)))
    return header, rows
