"""Private set intersection over in-memory queues: the exact intersection, one agreed order, no raw IDs on the wire."""

from __future__ import annotations

import pytest

from medsplit.align import (
    agreed_order,
    align_follower,
    align_leader,
    batch_fingerprint,
    check_fingerprints,
    psi_intersect,
)
from medsplit.errors import ProtocolError


def ids(lo: int, hi: int) -> list[str]:
    return [f"MRN-{k:09d}" for k in range(lo, hi)]


def test_pairwise_psi_gives_both_sides_exactly_the_intersection(Wire, run_parallel):
    w = Wire()
    leader, follower = ids(0, 150), ids(100, 260) + ["MRN-only-here"]
    got_l, got_f = run_parallel(lambda: psi_intersect(leader, *w.a(), role="leader"),
                                lambda: psi_intersect(follower, *w.b(), role="follower"))
    truth = sorted(set(leader) & set(follower))
    assert got_l == got_f == truth and len(truth) == 50


def test_alignment_across_three_sites_with_partial_overlap(Wire, run_parallel):
    w1, w2 = Wire(), Wire()
    labels_site, imaging, third = ids(0, 200), ids(40, 240), ids(20, 180)  # 80% overlaps
    order_l, order_1, order_2 = run_parallel(
        lambda: align_leader(labels_site, {"imaging": w1.a(), "third": w2.a()}),
        lambda: align_follower(imaging, *w1.b()),
        lambda: align_follower(third, *w2.b()))
    truth = set(labels_site) & set(imaging) & set(third)
    assert set(order_l) == truth and len(order_l) == len(truth) == 140
    assert order_l == order_1 == order_2  # every site's batch k holds the same patients
    assert order_l != sorted(order_l)  # a keyed order, not any site's own sorting
    for msg in w1.log + w2.log:  # raw IDs never cross
        assert not any(r.encode() in msg for r in labels_site + imaging + third)


def test_disjoint_cohorts_agree_on_nothing(Wire, run_parallel):
    w = Wire()
    a, b = run_parallel(lambda: align_leader(ids(0, 30), {"x": w.a()}), lambda: align_follower(ids(30, 60), *w.b()))
    assert a == b == []


def test_agreed_order_depends_only_on_key_and_ids():
    key = b"k" * 32
    xs = ids(0, 50)
    assert agreed_order(xs, key) == agreed_order(list(reversed(xs)), key)
    assert agreed_order(xs, key) != agreed_order(xs, b"j" * 32)


def test_garbage_message_is_a_protocol_error(Wire):
    w = Wire()
    send_b, _ = w.b()
    send_b(b"hello")
    with pytest.raises(ProtocolError, match="PSI"):
        psi_intersect(ids(0, 5), *w.a(), role="leader")


def test_batch_fingerprints():
    key = b"s" * 32
    batch = ["MRN-1", "MRN-2", "MRN-3"]
    fp = batch_fingerprint(batch, key)
    assert fp == batch_fingerprint(list(batch), key) and len(fp) == 64
    assert fp != batch_fingerprint(batch[::-1], key)  # order matters
    assert fp != batch_fingerprint(batch, b"t" * 32)
    assert batch_fingerprint(["ab", "c"], key) != batch_fingerprint(["a", "bc"], key)  # no concatenation collisions
    check_fingerprints({"a": fp, "b": fp, "c": fp})
    with pytest.raises(ProtocolError, match="at step 7: c disagree"):
        check_fingerprints({"a": fp, "b": fp, "c": batch_fingerprint(batch[:2], key)}, step=7)
