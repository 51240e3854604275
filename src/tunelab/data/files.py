"""Finding and reading data files: formats, folders, Hub ids, and raw records with their line numbers.

The raw readers exist for preflight: they walk a file the way a person reads it, so an error can name
the line. Training data itself is loaded with ``datasets`` (cached, memory-mapped).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

TABLE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TEXT_FORMATS = {".txt": "text", ".text": "text", ".md": "text"}
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class DataSource:
    """Where a split comes from: local files of one format, or a Hub dataset id."""

    spec: str
    files: tuple[Path, ...] = ()
    builder: str | None = None  # csv | json | parquet | text (local files) ; None for a Hub id
    hub_id: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.hub_id is not None

    def describe(self) -> str:
        return self.hub_id if self.is_hub else self.spec


def resolve_source(spec: str, allowed: dict[str, str]) -> DataSource:
    """A file, a folder of files of one format, or (when no such path exists) a Hub dataset id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in allowed)
        if not files:
            raise DataError(f"{spec}: the folder has no data files ({', '.join(sorted(allowed))}).")
        builders = {allowed[p.suffix.lower()] for p in files}
        suffixes = {p.suffix.lower() for p in files}
        if len(builders) > 1 or ({".csv", ".tsv"} <= suffixes):
            raise DataError(
                f"{spec}: the folder mixes formats ({', '.join(sorted(suffixes))}); keep one format."
            )
        return DataSource(spec, tuple(files), builders.pop())
    if path.exists():
        if path.suffix.lower() not in allowed:
            raise DataError(
                f"{spec}: unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(sorted(allowed))}."
            )
        return DataSource(spec, (path,), allowed[path.suffix.lower()])
    if path.suffix.lower() in allowed or spec.startswith((".", "/", "~")) or "\\" in spec:
        raise DataError(f"{spec}: file not found.")
    return DataSource(spec, hub_id=spec)


def read_text(path: Path) -> str:
    """The file's text as UTF-8; a decoding error names the line and column."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror}).") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path}: line {line}, column {column}: byte 0x{raw[e.start]:02x} is not valid UTF-8. "
            "Save the file as UTF-8 (for example: iconv -f latin1 -t utf-8 in.csv > out.csv)."
        ) from e


def csv_delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _csv_rows(text: str, delimiter: str, quoting: int):
    # newline="" splits rows on \n, \r and \r\n only, as pandas does; str.splitlines would also split on
    # \x0c, \x85 and \u2028 inside a text and report a ragged row that is not there.
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)


def _parses_as_quoted(text: str, delimiter: str) -> bool:
    """Whether every row parses cleanly, with the header's field count, when quotes are honoured."""
    rows = _csv_rows(text, delimiter, csv.QUOTE_MINIMAL)
    try:
        width = len(next(rows, []))
        return all(len(row) in (0, width) for row in rows)
    except csv.Error:
        return False


def csv_quoting(path: Path, text: str | None = None) -> int:
    """How to read a csv/tsv file: with quotes (csv.QUOTE_MINIMAL) or verbatim (csv.QUOTE_NONE).

    A .csv is always read with quotes (RFC 4180). A .tsv comes in two dialects: GLUE/SST-2 style, with no
    quoting at all, where a text may start with a '"' that is never closed; and csv-writer style (pandas
    ``to_csv(sep="\\t")``, spreadsheets), where fields holding a tab, a newline or a '"' are quoted. A .tsv
    is read with quotes when the whole file parses cleanly that way, otherwise verbatim (every line a row,
    '"' an ordinary character). Preflight and loading both ask this function, so they always agree.
    """
    if path.suffix.lower() != ".tsv":
        return csv.QUOTE_MINIMAL
    text = read_text(path) if text is None else text
    if '"' not in text or _parses_as_quoted(text, "\t"):
        return csv.QUOTE_MINIMAL
    return csv.QUOTE_NONE


def iter_csv_records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """Header and (line number, record) pairs; quoted multi-line fields count from their first line."""
    text = read_text(path)
    quoting = csv_quoting(path, text)
    reader = _csv_rows(text, csv_delimiter(path), quoting)
    try:
        header = next(reader)
    except StopIteration:
        header = []
    except csv.Error as e:
        raise DataError(f"{path}: line 1: cannot parse the header ({e}).") from None
    if not header:
        if not text.strip():
            raise DataError(f"{path}: the file is empty (no header row).")
        raise DataError(f"{path}: line 1 is blank; the first line must be the header (the column names).")
    header = [h.strip() for h in header]
    if any(not h for h in header):
        raise DataError(f"{path}: line 1: the header has an empty column name ({header}).")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise DataError(
            f"{path}: line 1: the header repeats the column name(s) {', '.join(duplicates)}; "
            "give every column its own name."
        )
    verbatim = (
        " (this .tsv is read without quoting, as GLUE/SST-2 files are, because it does not parse as a "
        "quoted file: '\"' is an ordinary character and every line is one row)"
        if quoting == csv.QUOTE_NONE
        else ""
    )

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        line = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(
                    f"{path}: line {line}: cannot parse the row ({e}). Check its quotes."
                ) from None
            if row:  # a blank line is not a row
                if len(row) != len(header):
                    raise DataError(
                        f"{path}: line {line}: the row has {len(row)} fields but the header has {len(header)} "
                        f"({', '.join(header)}). Check the delimiter and the quoting on that line{verbatim}."
                    )
                yield line, dict(zip(header, row, strict=True))
            line = reader.line_num + 1

    return header, records()


def _is_json_document(path: Path, text: str) -> bool:
    """A JSON array (or an object wrapping one) rather than JSON Lines."""
    stripped = text.lstrip()
    return stripped.startswith("[") or (
        path.suffix.lower() == ".json" and stripped.startswith("{") and "\n{" not in stripped
    )


def _records_key(data: dict, path: Path) -> str:
    """The key of the one list of records in {"data": [...]}."""
    keys = [k for k, v in data.items() if isinstance(v, list)]
    if len(keys) != 1:
        raise DataError(
            f"{path}: expected a list of records, one JSON object per example (or JSON Lines, one object per "
            f'line, or {{"data": [...]}}); the top-level object has the keys {", ".join(data) or "(none)"}.'
        )
    return keys[0]


def json_field(path: Path) -> str | None:
    """The key holding the records when the file is {"<key>": [...]}, for ``datasets``' ``field``."""
    text = read_text(path)
    if (
        path.suffix.lower() != ".json"
        or not _is_json_document(path, text)
        or not text.lstrip().startswith("{")
    ):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None  # preflight has reported it
    return _records_key(data, path) if isinstance(data, dict) else None


def iter_json_records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]], str]:
    """Records of a JSON Lines file (numbered by line) or of a JSON array or {"data": [...]} (by record)."""
    text = read_text(path)
    pairs: list[tuple[int, Any]] = []
    if _is_json_document(path, text):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg}).") from None
        if isinstance(data, dict):
            data = data[_records_key(data, path)]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of records, got a JSON {type(data).__name__}.")
        pairs = [(i + 1, rec) for i, rec in enumerate(data)]
        unit = "record"
    else:
        # Split on "\n" only, as JSON Lines readers do: a raw U+2028 inside a JSON string is valid.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {number}, column {e.colno}: invalid JSON ({e.msg}).") from None
        unit = "line"
    for number, rec in pairs:
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {unit} {number}: expected a JSON object, got {type(rec).__name__}.")
    header = list(dict.fromkeys(k for _, rec in pairs for k in rec))
    return header, ((n, rec) for n, rec in pairs), unit


def iter_parquet_records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
    return table.column_names, ((i + 1, rec) for i, rec in enumerate(table.to_pylist()))


def iter_records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]], str]:
    """(columns, records with their position, the word for a position: 'line' | 'record' | 'row')."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return (*iter_csv_records(path), "line")
    if suffix in (".json", ".jsonl"):
        return iter_json_records(path)
    if suffix == ".parquet":
        return (*iter_parquet_records(path), "row")
    raise DataError(f"{path}: unsupported file type {suffix!r}.")


def load_source(source: DataSource, config_name: str | None = None, split: str = "train"):
    """Load a source with ``datasets`` (cached); Hub failures become a clear DataError."""
    import datasets

    if source.is_hub:
        try:
            loaded = datasets.load_dataset(source.hub_id, config_name)
        except Exception as e:  # offline, unknown id, gated: all reach the user as one message
            raise DataError(
                f"{source.hub_id}: not a local file or folder, and loading it as a Hugging Face Hub dataset "
                f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                "Check the path, or the dataset id and your network."
            ) from None
        if split not in loaded:
            raise DataError(f"{source.hub_id}: has no split {split!r}; it has {', '.join(loaded)}.")
        return loaded[split]
    if source.builder == "csv":
        return _load_csv_files(source.files)
    kwargs: dict[str, Any] = {}
    if source.builder == "json":
        fields = {json_field(p) for p in source.files}
        if len(fields) > 1:
            raise DataError(
                f"{source.spec}: some files are JSON Lines or arrays and some wrap the records in an "
                "object; keep one layout."
            )
        if (field := fields.pop()) is not None:
            kwargs["field"] = field
    return _load_local(source.builder, source.files, **kwargs)


def _csv_options(path: Path) -> dict[str, Any]:
    """How ``datasets`` (pandas) must read a csv/tsv file to see what preflight saw."""
    import datasets

    text = read_text(path)
    delimiter, quoting = csv_delimiter(path), csv_quoting(path, text)
    header = [h.strip() for h in next(_csv_rows(text, delimiter, quoting))]
    return {
        "delimiter": delimiter,
        "quoting": quoting,
        # Keep strings as strings: "007" stays "007" and "NA" is not a null, so labels map as preflight saw them.
        "keep_default_na": False,
        "features": datasets.Features({h: datasets.Value("string") for h in header}),
        "column_names": header,
        "skiprows": 1,
    }


def _load_csv_files(files: tuple[Path, ...]):
    # One read for a folder whose files read alike; file by file when they differ (a folder may hold a
    # quoted .tsv next to a verbatim one).
    import datasets

    options = [_csv_options(p) for p in files]
    if all(o == options[0] for o in options):
        return _load_local("csv", files, **options[0])
    return datasets.concatenate_datasets(
        [_load_local("csv", (p,), **o) for p, o in zip(files, options, strict=True)]
    )


def _load_local(builder: str, files: tuple[Path, ...], **kwargs: Any):
    import datasets

    try:
        return datasets.load_dataset(
            builder, data_files={"data": [str(p) for p in files]}, split="data", **kwargs
        )
    except Exception as e:  # noqa: BLE001 - preflight passed, so this is a case it does not know; name the file
        cause = e.__cause__ or e
        detail = str(cause).splitlines()[0] if str(cause) else ""
        raise DataError(
            f"{', '.join(str(p) for p in files)}: preflight passed but loading with datasets failed "
            f"({type(cause).__name__}: {detail}). Check the file's format."
        ) from e
