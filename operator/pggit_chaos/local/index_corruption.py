"""``index-corruption`` on the embedded server: misorder two entries of a pgGit btree index.

Built by the local substrate (only around its own throwaway
:class:`~pggit_chaos.local.server.EmbeddedPostgres`: the damage is permanent, so never with
``--dsn`` and never in a cluster). The fault stops the server cleanly (a fast shutdown writes
every page and a shutdown checkpoint, so no WAL replay restores the page afterwards), swaps two
adjacent entries of one leaf page of the index in its relation file (found with
``pg_relation_filepath``), rewrites the page checksum when the cluster has data checksums (so
that reads succeed and only a structural check sees the damage), and starts the server again.
Page header, special space and every other page stay as they were: the index still reads, it
just answers wrongly, which is the corruption amcheck's ``bt_index_check`` exists to find
("item order invariant violated"). Revert has no data to restore: it only makes sure the
server runs. Also used directly by the tests (:func:`corrupt_index`).
"""

from __future__ import annotations

import itertools
import os
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.local.process import cluster_undo
from pggit_chaos.local.server import EmbeddedPostgres

#: Page layout (PostgreSQL's bufpage.h / nbtree.h); little-endian as on every supported CPU.
_PAGE_HEADER = 24
_ITEM_ID = 4
_LP_NORMAL = 1
_BTP_LEAF, _BTP_DELETED, _BTP_META, _BTP_HALF_DEAD = 1, 4, 8, 16
_CHECKSUM_AT = 8

#: PostgreSQL's page checksum (storage/checksum_impl.h): 32 FNV-1a lanes with these seeds.
_N_SUMS = 32
_FNV_PRIME = 16777619
_CHECKSUM_BASE_OFFSETS = (
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
)

#: What the evidence says about the verdict this destructive experiment should reach.
EXPECTED_FAIL = (
    "destructive: the damage stays, nothing reverts it; the checks are expected to FAIL "
    "naming {index} (amcheck) — that Fail is this experiment's expected outcome, it proves the "
    "corruption checks see a corrupted pgGit index"
)


def page_checksum(page: bytes, block: int) -> int:
    """``pg_checksum_page(page, block)``: the 16-bit checksum PostgreSQL stores in a page."""
    size = len(page)
    words = struct.unpack(f"<{size // 4}I", page[:_CHECKSUM_AT] + b"\0\0" + page[_CHECKSUM_AT + 2:])
    sums = list(_CHECKSUM_BASE_OFFSETS)
    mask = 0xFFFFFFFF
    for row in range(0, len(words), _N_SUMS):
        for lane in range(_N_SUMS):
            tmp = sums[lane] ^ words[row + lane]
            sums[lane] = ((tmp * _FNV_PRIME) & mask) ^ (tmp >> 17)
    for _ in range(2):  # two rounds of zeroes for additional mixing
        for lane in range(_N_SUMS):
            tmp = sums[lane]
            sums[lane] = ((tmp * _FNV_PRIME) & mask) ^ (tmp >> 17)
    result = 0
    for value in sums:
        result ^= value
    result ^= block
    return (result % 65535) + 1


@dataclass(frozen=True)
class BtreeIndex:
    """One pgGit btree index as the catalog names it, with its relation file."""

    name: str
    """``pggit.<index>``."""
    path: str
    """Relation file, relative to the data folder (``pg_relation_filepath``)."""


@dataclass(frozen=True)
class _Item:
    offset_number: int  # 1-based position on the page
    lp_at: int  # byte offset of its line pointer in the page
    start: int  # byte offset of the tuple
    length: int


@dataclass
class Corruption:
    """What :func:`corrupt_index` changed, in figures a person can check with a hex dump."""

    index: str
    file: str
    block: int
    items: tuple[int, int]
    method: str
    bytes_changed: int
    checksums: bool
    offsets: list[int] = field(default_factory=list)

    def describe(self) -> str:
        how = ("swapped their tuple bytes" if self.method == "swap-items"
               else "swapped their line pointers")
        checksum = ("; data checksums on: the page checksum was rewritten, so the page reads "
                    "and only amcheck sees the damage" if self.checksums else "")
        return (f"{self.index} ({self.file}): entries {self.items[0]} and {self.items[1]} of "
                f"leaf block {self.block} {how} ({self.bytes_changed} bytes changed){checksum}")


def _leaf_items(page: bytes) -> list[_Item]:
    """The data entries (no high key) of a live btree leaf page, in page order."""
    lower, _upper, special = struct.unpack_from("<HHH", page, 12)
    if special + 16 > len(page) or lower < _PAGE_HEADER or lower > special:
        return []
    _prev, next_page, _level, flags = struct.unpack_from("<IIIH", page, special)
    if not flags & _BTP_LEAF or flags & (_BTP_DELETED | _BTP_META | _BTP_HALF_DEAD):
        return []
    items = []
    for number in range(1, (lower - _PAGE_HEADER) // _ITEM_ID + 1):
        at = _PAGE_HEADER + (number - 1) * _ITEM_ID
        (word,) = struct.unpack_from("<I", page, at)
        offset, flags_lp, length = word & 0x7FFF, (word >> 15) & 0x3, word >> 17
        if flags_lp == _LP_NORMAL and length and offset + length <= special:
            items.append(_Item(number, at, offset, length))
    # A page that is not the rightmost of its level starts with its high key (not an entry).
    first = items[1:] if next_page != 0 and items and items[0].offset_number == 1 else items
    return first


def _pick_pair(page: bytes, items: list[_Item]) -> tuple[_Item, _Item] | None:
    """Two adjacent entries with different bytes (so that swapping them misorders them)."""
    pairs = list(itertools.pairwise(items))
    same_size = [(a, b) for a, b in pairs if a.length == b.length]
    for a, b in same_size + pairs:
        if page[a.start:a.start + a.length] != page[b.start:b.start + b.length]:
            return a, b
    return None


def _read_blocks(path: Path, block_size: int) -> list[bytes]:
    data = path.read_bytes()
    return [data[i:i + block_size] for i in range(0, len(data) - block_size + 1, block_size)]


def choose_target(data_dir: Path, indexes: list[BtreeIndex], block_size: int,
                  wanted: str | None = None) -> tuple[BtreeIndex, int, list[_Item]]:
    """The index (``wanted``, else the one with the most leaf entries) and its fullest leaf.

    Raises :class:`FaultError` when no such index has a leaf page with two entries.
    """
    if wanted is not None:
        named = [ix for ix in indexes if ix.name in (wanted, f"pggit.{wanted}")]
        if not named:
            known = ", ".join(ix.name for ix in indexes) or "none"
            raise FaultError(f"index-corruption: pggit has no btree index {wanted!r} "
                             f"(its btree indexes: {known})")
        indexes = named
    best: tuple[int, BtreeIndex, int, list[_Item]] | None = None
    for index in indexes:
        blocks = _read_blocks(data_dir / index.path, block_size)
        total = 0
        fullest: tuple[int, list[_Item]] | None = None
        for number, page in enumerate(blocks):
            if number == 0:  # the metapage
                continue
            items = _leaf_items(page)
            total += len(items)
            if len(items) >= 2 and _pick_pair(page, items) is not None and (
                    fullest is None or len(items) > len(fullest[1])):
                fullest = (number, items)
        if fullest is not None and (best is None or total > best[0]):
            best = (total, index, *fullest)
    if best is None:
        which = wanted or "any pgGit btree index"
        raise FaultError(f"index-corruption: {which} has no leaf page with two distinct "
                         "entries to misorder (too few rows: let the workload run first)")
    _, index, block, items = best
    return index, block, items


def corrupt_page(path: Path, block: int, block_size: int, checksums: bool,
                 items: list[_Item] | None = None) -> tuple[tuple[int, int], str, list[int]]:
    """Swap two adjacent entries of leaf ``block`` in ``path``; rewrite its checksum if on.

    Returns the two entries' positions, the method and the byte offsets (in the file) that
    changed. The write is fsynced and read back.
    """
    with open(path, "r+b") as handle:
        handle.seek(block * block_size)
        page = bytearray(handle.read(block_size))
        before = bytes(page)
        pair = _pick_pair(before, items if items is not None else _leaf_items(before))
        if pair is None:
            raise FaultError(f"index-corruption: block {block} of {path} has no two distinct "
                             "entries")
        a, b = pair
        if a.length == b.length:
            method = "swap-items"
            page[a.start:a.start + a.length] = before[b.start:b.start + b.length]
            page[b.start:b.start + b.length] = before[a.start:a.start + a.length]
        else:
            method = "swap-line-pointers"
            page[a.lp_at:a.lp_at + _ITEM_ID] = before[b.lp_at:b.lp_at + _ITEM_ID]
            page[b.lp_at:b.lp_at + _ITEM_ID] = before[a.lp_at:a.lp_at + _ITEM_ID]
        if checksums:
            struct.pack_into("<H", page, _CHECKSUM_AT, page_checksum(bytes(page), block))
        handle.seek(block * block_size)
        handle.write(page)
        handle.flush()
        os.fsync(handle.fileno())
        handle.seek(block * block_size)
        if handle.read(block_size) != bytes(page):
            raise FaultError(f"index-corruption: block {block} of {path} did not read back as "
                             "written")
    changed = [block * block_size + i for i in range(block_size) if page[i] != before[i]]
    return (a.offset_number, b.offset_number), method, changed


def pggit_btree_indexes(conn: psycopg.Connection[Any]) -> list[BtreeIndex]:
    """pgGit's btree indexes (schema pggit) and their relation files."""
    rows = conn.execute(
        "SELECT 'pggit.' || c.relname, pg_relation_filepath(c.oid) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam"
        " WHERE n.nspname = 'pggit' AND c.relkind = 'i' AND am.amname = 'btree'"
        " ORDER BY c.relname"
    ).fetchall()
    return [BtreeIndex(str(name), str(path)) for name, path in rows if path]


def corrupt_index(server: EmbeddedPostgres, dbname: str, index: str | None = None) -> Corruption:
    """Stop ``server`` cleanly, misorder two entries of a pgGit index, start it again.

    Only for a throwaway server this process owns. The server runs again when this returns,
    also after a failure past the stop.
    """
    with psycopg.connect(server.socket_dsn(dbname), autocommit=True, connect_timeout=10) as conn:
        indexes = pggit_btree_indexes(conn)
        row = conn.execute("SELECT current_setting('data_checksums'),"
                           " current_setting('block_size')::int").fetchone()
        # Every change of pgGit's tables so far on disk before the shutdown (the checkpoint
        # also makes the shutdown itself quick).
        conn.execute("CHECKPOINT")
    if not indexes:
        raise FaultError(f"index-corruption: database {dbname} has no pgGit btree index")
    assert row is not None
    checksums, block_size = str(row[0]) == "on", int(row[1])
    process = server.process
    server.stop()
    try:
        if process is None or process.returncode != 0:
            code = None if process is None else process.returncode
            raise FaultError(f"index-corruption: the server did not shut down cleanly (exit "
                             f"{code}); a crash recovery would undo the change, so none was made")
        target, block, items = choose_target(server.data_dir, indexes, block_size, index)
        positions, method, offsets = corrupt_page(server.data_dir / target.path, block,
                                                  block_size, checksums, items)
    finally:
        server.start()
    return Corruption(index=target.name, file=target.path, block=block, items=positions,
                      method=method, bytes_changed=len(offsets), checksums=checksums,
                      offsets=offsets)


class IndexCorruption:
    """The fault: :func:`corrupt_index` at injection; revert only makes sure the server runs."""

    type = "index-corruption"
    recovery_from_injection = False

    def __init__(self, server: EmbeddedPostgres, dbname: str, index: str | None = None, *,
                 intent_id: str | None = None) -> None:
        self.server = server
        self.dbname = dbname
        self.index = index
        self._id = intent_id or uuid.uuid4().hex[:12]
        self._intent: FaultIntent | None = None
        #: What was changed (None until the injection wrote the page).
        self.corruption: Corruption | None = None
        self.stopped_pid: int | None = None
        self.restarted_pid: int | None = None

    def check(self) -> None:
        """Only the embedded server this process started (it is stopped and restarted)."""
        if self.server.base is None or self.server.process is None:
            raise FaultError("index-corruption: the embedded PostgreSQL has not been started")

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self.check()
            which = f"pggit.{self.index}" if self.index else "the pgGit index with most entries"
            self._intent = FaultIntent(
                type=self.type,
                target=f"{which} in {self.server.data_dir}",
                # Nothing restores the data: a run that died mid-fault leaves a throwaway
                # cluster whose only undo is to remove it (as for its resource intent).
                undo=cluster_undo(self.server),
                description=("DESTRUCTIVE: stop the server cleanly, swap two entries of a leaf "
                             f"page of {which}, start it again; not revertible"),
                id=self._id,
            )
        return self._intent

    def plan_lines(self) -> list[str]:
        which = f"pggit.{self.index}" if self.index else "the pgGit btree index with most entries"
        return [
            f"stop postmaster {self.server.pid} cleanly (fast shutdown, shutdown checkpoint)",
            f"swap two adjacent entries of a leaf page of {which} in its relation file "
            "(pg_relation_filepath); the page checksum rewritten if data checksums are on",
            "start the server again; DESTRUCTIVE: nothing reverts the damage, the checks are "
            "expected to Fail naming the index",
        ]

    def inject(self) -> None:
        self.check()
        self.stopped_pid = self.server.pid
        self.corruption = corrupt_index(self.server, self.dbname, self.index)
        self.restarted_pid = self.server.pid

    def revert(self) -> None:
        """Nothing to undo (destructive); make sure the server runs again."""
        if self.server.base is None or self.server.running:
            return
        try:
            self.server.start()
        except Exception as exc:
            raise FaultError(f"index-corruption: PostgreSQL did not start again: {exc}") from exc
        self.restarted_pid = self.server.pid

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The bytes written (read back from the file), the restart, and what to expect."""
        corruption = self.corruption
        if corruption is None:
            return FaultEvidence(False, "index-corruption did not bite: no page was written")
        figures: dict[str, Figure] = {
            "index": corruption.index,
            "file": corruption.file,
            "block": corruption.block,
            "entries": f"{corruption.items[0]},{corruption.items[1]}",
            "method": corruption.method,
            "bytes_changed": corruption.bytes_changed,
            "data_checksums": 1 if corruption.checksums else 0,
            "stopped_postmaster_pid": self.stopped_pid or 0,
            "new_postmaster_pid": self.restarted_pid or 0,
        }
        restarted = self.server.running and self.restarted_pid != self.stopped_pid
        bit = corruption.bytes_changed > 0 and restarted
        if not bit:
            why = "no byte changed" if not corruption.bytes_changed else "the server is not up"
            return FaultEvidence(False, f"index-corruption did not bite: {why}", figures)
        summary = (f"overwrote {corruption.describe()}; the server was stopped cleanly and "
                   f"restarted as pid {self.restarted_pid}. "
                   + EXPECTED_FAIL.format(index=corruption.index))
        return FaultEvidence(True, summary, figures)

