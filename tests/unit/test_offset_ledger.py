"""Acks go to faust in offset order per partition (stream_app/offset_ledger.py)."""

from __future__ import annotations

from stream_app.offset_ledger import OffsetLedger


def test_a_record_finished_early_waits_for_every_earlier_one() -> None:
    ledger = OffsetLedger()
    for offset in (5, 6, 7, 8):
        ledger.take("p0", offset)
    assert ledger.finish("p0", 7) == []  # 5 and 6 are still being judged
    assert ledger.finish("p0", 6) == []
    assert ledger.finish("p0", 5) == [5, 6, 7]
    assert ledger.finish("p0", 8) == [8]
    assert ledger.open_count() == 0


def test_the_one_offset_gap_faust_misses_is_held() -> None:
    """faust commits 32.. when 31 is open and committed is 31 (min(acked) - 31 == 1)."""
    ledger = OffsetLedger()
    ledger.take("p0", 31)
    ledger.take("p0", 32)
    assert ledger.finish("p0", 32) == []
    assert ledger.finish("p0", 31) == [31, 32]


def test_partitions_are_independent() -> None:
    ledger = OffsetLedger()
    ledger.take("a", 1)
    ledger.take("b", 1)
    assert ledger.finish("b", 1) == [1]
    assert ledger.finish("a", 1) == [1]


def test_a_partition_read_again_forgets_what_will_come_again() -> None:
    ledger = OffsetLedger()
    for offset in (10, 11, 12):
        ledger.take("p0", offset)
    ledger.take("p0", 11)  # a seek back to 11: 11 and 12 are delivered again
    assert ledger.finish("p0", 12) == []  # the old copy of 12 is forgotten
    assert ledger.finish("p0", 10) == [10]
    assert ledger.finish("p0", 11) == [11]
    ledger.forget("p0")
    assert ledger.finish("p0", 12) == [] and ledger.open_count() == 0
