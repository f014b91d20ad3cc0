"""One Parquet file from Parquet files encoded apart: their column chunks, one footer.

Why: pyarrow encodes a file's row groups one after another on one thread (its
``use_threads`` writer option is not exposed), so a big job's last row groups
were encoded while a core sat idle. ``_parallel_parquet`` encodes each row
group as a standalone in-memory Parquet file ("part") on its own thread, and
this module joins the parts into the file a single ``ParquetWriter`` would
have written: the same column-chunk bytes, one after another, and one footer
whose row groups are the parts' row groups with their offsets moved. The
result is byte for byte what ``pq.ParquetWriter`` writes for the same row
groups (tested), so every reader sees an ordinary file.

Layout (Parquet format spec, "File Format"): ``PAR1``, column chunks, the
footer (Thrift compact ``FileMetaData``), its length (4 bytes LE), ``PAR1``.
Offsets in ``ColumnMetaData`` (data, dictionary, index page) and in
``ColumnChunk``/``RowGroup`` (``file_offset``) are absolute, so a part whose
data starts at byte 4 of its own file and at byte ``base`` of the joined file
has each offset moved by ``base - 4``. Row groups are renumbered (``ordinal``)
and ``num_rows`` is summed. Parts must share their schema and metadata.

A part using a footer feature with offsets this module does not move (a page
index, a bloom filter, encryption) raises ``StitchError``: the writer then
writes the file the ordinary way. Source for the field ids:
https://github.com/apache/parquet-format/blob/master/src/main/thrift/parquet.thrift
"""

from __future__ import annotations

import struct

import attrs

from casparian_trio.sinks import _thrift_compact as tc
from casparian_trio.sinks._thrift_compact import Field, Sequence

MAGIC = b"PAR1"
_LENGTH = struct.Struct("<I")

# FileMetaData
_FMD_SCHEMA, _FMD_NUM_ROWS, _FMD_ROW_GROUPS = 2, 3, 4
_FMD_ENCRYPTION = (8, 9)  # encryption_algorithm, footer_signing_key_metadata
# RowGroup
_RG_COLUMNS, _RG_TOTAL_BYTES, _RG_FILE_OFFSET, _RG_COMPRESSED, _RG_ORDINAL = 1, 2, 5, 6, 7
# ColumnChunk
_CC_FILE_OFFSET, _CC_META = 2, 3
_CC_UNMOVED = (4, 6, 8, 9)  # offset index, column index, crypto metadata, encrypted metadata
# ColumnMetaData: data_page_offset, index_page_offset, dictionary_page_offset
_CMD_OFFSETS = (9, 10, 11)
_CMD_BLOOM = 14


class StitchError(ValueError):
    """The parts cannot be joined by this module (see the module docstring)."""


@attrs.define(eq=False)
class Part:
    """One standalone Parquet file's pieces: its column chunks and its footer.

    The footer is decoded when first needed: a file of one part is written
    with the footer pyarrow encoded (``raw_footer``), never decoded at all
    (decoding it in Python cost a small file's job ~2 ms of its ~7).
    """

    # The bytes between the leading PAR1 and the footer, in order: one piece as
    # split, two once set ``beside`` (not joined: a copy of a whole row group,
    # ~5 ms per 500k rows); none once written.
    pieces: tuple[memoryview, ...]
    size: int  # their length as split: where the next part's data starts
    decoded: list[Field] | None = None
    raw_footer: bytes | None = None  # the footer as pyarrow encoded it (a part split, not made)

    @property
    def footer(self) -> list[Field]:
        """The decoded footer (``StitchError`` if it cannot be read or moved)."""
        if self.decoded is None:
            assert self.raw_footer is not None
            self.decoded = _decode_movable(self.raw_footer)
        return self.decoded

    def written(self) -> Part:
        """This part without its data (kept for the footer once the data is in the file)."""
        return Part((), self.size, self.decoded, self.raw_footer)

    @property
    def num_rows(self) -> int:
        field = tc.get(self.footer, _FMD_NUM_ROWS)
        return int(field.value) if field is not None else 0


def split(file_bytes: bytes | memoryview, *, lazy: bool = False) -> Part:
    """A whole Parquet file (as written by pyarrow) as a ``Part``.

    ``lazy``: check only the magic and the footer's length now; the footer is
    decoded (and can raise) when a join needs it, and a file of this part
    alone keeps pyarrow's bytes.

    Raises:
        StitchError: not a Parquet file, or a footer feature we cannot move.
    """
    view = memoryview(file_bytes)
    if len(view) < 12 or view[:4] != MAGIC or view[-4:] != MAGIC:
        raise StitchError("not a Parquet file (no PAR1 magic)")
    (length,) = _LENGTH.unpack(view[-8:-4])
    start = len(view) - 8 - length
    if start < 4:
        raise StitchError("Parquet footer length out of range")
    raw = bytes(view[start:-8])  # a copy: a kept part must not hold the whole buffer
    part = Part((view[4:start],), start - 4, None, raw)
    if not lazy:
        part.footer  # noqa: B018 (decoded and checked now)
    return part


def _decode_movable(raw: bytes) -> list[Field]:
    try:
        footer = tc.decode(raw)
    except tc.ThriftError as exc:
        raise StitchError(f"unreadable Parquet footer: {exc}") from exc
    _check_movable(footer)
    return footer


def without_row_groups(part: Part) -> Part:
    """``part`` as the file of a writer that wrote no row group: its schema, no data."""
    footer = [
        f._replace(value=Sequence(tc.STRUCT, []))
        if f.id == _FMD_ROW_GROUPS
        else f._replace(value=0)
        if f.id == _FMD_NUM_ROWS
        else f
        for f in part.footer
    ]
    return Part((), 0, footer)


def join_footer(parts: list[Part]) -> bytes:
    """The footer, its length and the trailing magic for ``parts`` written one after another.

    The joined file is ``MAGIC``, each part's ``pieces`` in order, then ``join_footer(parts)``.
    Raises StitchError: no parts, or parts whose schema or metadata differ.
    """
    if not parts:
        raise StitchError("no parts to join")
    if len(parts) == 1 and parts[0].raw_footer is not None:
        footer = parts[0].raw_footer  # one part: its own footer is the file's, as encoded
        return footer + _LENGTH.pack(len(footer)) + MAGIC
    first = parts[0].footer
    groups: list[list[Field]] = []
    base = len(MAGIC)
    for part in parts:
        if _without(part.footer, _FMD_NUM_ROWS, _FMD_ROW_GROUPS) != _without(
            first, _FMD_NUM_ROWS, _FMD_ROW_GROUPS
        ):
            raise StitchError("parts differ in schema or metadata")
        shift = base - len(MAGIC)
        for group in _row_groups(part.footer):
            groups.append(_moved_group(group, shift, len(groups)))
        base += part.size
    total = sum(part.num_rows for part in parts)
    joined: list[Field] = []
    for field in first:
        if field.id == _FMD_NUM_ROWS:
            joined.append(field._replace(value=total))
        elif field.id == _FMD_ROW_GROUPS:
            joined.append(field._replace(value=Sequence(tc.STRUCT, groups)))
        else:
            joined.append(field)
    footer = tc.encode(joined)
    return footer + _LENGTH.pack(len(footer)) + MAGIC


def beside(left: Part, right: Part, template: Part) -> Part:
    """One row group of ``left``'s columns followed by ``right``'s: a part of ``template``'s schema.

    ``left`` and ``right`` each hold one row group of the same rows, encoded
    from the first and the last columns of a table; the result is the part
    ``split`` would give for the whole table, byte for byte, since a column
    chunk's bytes do not depend on the other columns or on where the chunk
    lies (Parquet pages hold no offsets; the footer's are moved here).
    ``template``: a part of the whole schema (its footer's schema, metadata
    and column orders are kept; its row groups are not used).

    Raises:
        StitchError: not one row group each, or not the same number of rows.
    """
    (mine,), (theirs,) = _one_group(left), _one_group(right)
    if left.num_rows != right.num_rows:  # one group each: the file's rows are the group's
        raise StitchError("parts set side by side must hold the same rows")
    moved = _moved_group(theirs, left.size, 0)
    columns = tc.get(moved, _RG_COLUMNS)
    assert columns is not None  # _check_movable saw every chunk
    group: list[Field] = []
    for field in mine:
        if field.id == _RG_COLUMNS:
            chunks = [*field.value.values, *columns.value.values]
            group.append(field._replace(value=Sequence(field.value.elem_type, chunks)))
        elif field.id in (_RG_TOTAL_BYTES, _RG_COMPRESSED):
            other = tc.get(theirs, field.id)
            group.append(field._replace(value=field.value + (other.value if other else 0)))
        else:
            group.append(field)
    footer = [
        f._replace(value=Sequence(tc.STRUCT, [group]))
        if f.id == _FMD_ROW_GROUPS
        else f._replace(value=left.num_rows)
        if f.id == _FMD_NUM_ROWS
        else f
        for f in template.footer
    ]
    return Part((*left.pieces, *right.pieces), left.size + right.size, footer)


def _one_group(part: Part) -> list[list[Field]]:
    groups = _row_groups(part.footer)
    if len(groups) != 1:
        raise StitchError(f"a part set side by side has {len(groups)} row groups, not 1")
    return groups


def _row_groups(footer: list[Field]) -> list[list[Field]]:
    field = tc.get(footer, _FMD_ROW_GROUPS)
    return [] if field is None else list(field.value.values)


def _without(fields: list[Field], *ids: int) -> list[Field]:
    return [f for f in fields if f.id not in ids]


def _check_movable(footer: list[Field]) -> None:
    if any(tc.get(footer, i) is not None for i in _FMD_ENCRYPTION):
        raise StitchError("encrypted Parquet footer")
    if tc.get(footer, _FMD_SCHEMA) is None:
        raise StitchError("Parquet footer without a schema")
    for group in _row_groups(footer):
        columns = tc.get(group, _RG_COLUMNS)
        for chunk in columns.value.values if columns is not None else []:
            if any(tc.get(chunk, i) is not None for i in _CC_UNMOVED):
                raise StitchError("a page index or encryption in the footer")
            meta = tc.get(chunk, _CC_META)
            if meta is None or tc.get(meta.value, _CMD_BLOOM) is not None:
                raise StitchError("a bloom filter, or a column chunk without metadata")


def _moved_group(group: list[Field], shift: int, ordinal: int) -> list[Field]:
    moved: list[Field] = []
    for field in group:
        if field.id == _RG_COLUMNS:
            chunks = [_moved_chunk(c, shift) for c in field.value.values]
            moved.append(field._replace(value=Sequence(field.value.elem_type, chunks)))
        elif field.id == _RG_FILE_OFFSET:
            moved.append(_moved(field, shift))
        elif field.id == _RG_ORDINAL:
            moved.append(field._replace(value=ordinal))
        else:
            moved.append(field)
    return moved


def _moved_chunk(chunk: list[Field], shift: int) -> list[Field]:
    moved: list[Field] = []
    for field in chunk:
        if field.id == _CC_FILE_OFFSET:
            moved.append(_moved(field, shift))
        elif field.id == _CC_META:
            meta = [_moved(f, shift) if f.id in _CMD_OFFSETS else f for f in field.value]
            moved.append(field._replace(value=meta))
        else:
            moved.append(field)
    return moved


def _moved(field: Field, shift: int) -> Field:
    # 0 means "not set" for file_offset (no chunk starts at byte 0: PAR1 is there).
    if not isinstance(field.value, int) or field.value == 0:
        return field
    return field._replace(value=field.value + shift)
