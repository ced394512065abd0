"""The lease (sftflow.infra.lease) against the GCS emulator, which honours ifGenerationMatch here
(tests/servers/gcs_preconditions.py): one holder, fail fast naming a live holder, take over after a
SIGKILL within the TTL, a holder that stalled past its TTL learns it lost the lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sftflow.infra import lease
from sftflow.infra.lease import Lease, LeaseBusy


def test_one_holder_second_fails_fast_naming_it_then_takes_it_after_release(gcs_bucket):
    uri = f"{gcs_bucket}/l/a.lease"
    first = Lease(uri, ttl=30, what="ckpt").acquire()
    try:
        content, gen = lease.read(uri)
        assert content["owner"] == f"pid {os.getpid()} on {os.uname().nodename}" and gen == first.generation
        with pytest.raises(LeaseBusy, match=rf"ckpt: another process is writing it \(pid {os.getpid()} on "):
            Lease(uri, ttl=30, wait=False, what="ckpt").acquire()
    finally:
        first.release()
    assert lease.read(uri) is None  # released: deleted
    with Lease(uri, ttl=30) as second:
        assert second.took_over_from is None and not second.lost


def test_renewal_keeps_it_and_a_waiting_contender_fails_once_it_sees_a_renewal(gcs_bucket):
    uri = f"{gcs_bucket}/l/b.lease"
    with Lease(uri, ttl=0.9) as holder:
        gen0 = holder.generation
        start = time.monotonic()
        with pytest.raises(LeaseBusy, match="it is alive"):
            Lease(uri, ttl=0.9).acquire()  # waits while the holder might be dead, fails when it renews
        assert time.monotonic() - start < 0.9 + 0.5
        assert holder.generation != gen0 and not holder.lost  # renewed with its own generation
        time.sleep(1.2)  # longer than the TTL: the renewals keep it
        with pytest.raises(LeaseBusy):
            Lease(uri, ttl=0.9, wait=False).acquire()


def test_a_holder_past_its_ttl_is_taken_over_and_learns_it_lost(gcs_bucket):
    uri = f"{gcs_bucket}/l/c.lease"
    clock = [1000.0]
    stalled = Lease(uri, ttl=5, clock=lambda: clock[0])
    stalled.acquire()
    stalled._stop.set()  # a holder stalled (no renewal) ...
    stalled._thread.join()
    clock[0] += 6  # ... past its TTL
    taker = Lease(uri, ttl=5, clock=lambda: clock[0]).acquire()
    try:
        assert taker.took_over_from == stalled.owner
        assert lease.write_if(uri, {"owner": "stale"}, stalled.generation) is None  # its renewal now fails: 412
        stalled._stop.clear()
        thread = threading.Thread(target=stalled._renew_loop)  # the stalled holder wakes up: one renewal tick
        thread.start()
        time.sleep(5 / 3 + 0.5)
        stalled._stop.set()
        thread.join()
        assert stalled.lost
        with pytest.raises(LeaseBusy, match="lost its lease"):
            stalled.check()
        assert lease.read(uri)[0]["owner"] == taker.owner and not taker.lost  # the taker's lease is untouched
    finally:
        taker.release()
    stalled.release()  # a lost lease is not deleted by its former holder


def test_sigkilled_holder_blocks_nobody_longer_than_the_ttl(gcs_bucket, gcs_emulator):
    uri = f"{gcs_bucket}/l/d.lease"
    ttl = 2.0
    code = textwrap.dedent(f"""
        import time
        from sftflow.infra.lease import Lease
        Lease({uri!r}, ttl={ttl}).acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "held"
        time.sleep(ttl / 2)
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
    finally:
        child.kill()
        child.wait()
    with Lease(uri, ttl=ttl) as taker:
        waited = time.monotonic() - killed
    assert taker.took_over_from == f"pid {child.pid} on {os.uname().nodename}"
    print(f"take-over after SIGKILL: {waited:.2f} s (ttl {ttl} s)")
    assert waited <= ttl + 0.5


# --------------------------------------------------------------------------- the evaluation checkpoint in a bucket


def test_gcs_checkpoint_resumes_on_another_machine_and_refuses_a_live_second_writer(gcs_bucket):
    from sftflow.errors import CheckpointBusy
    from sftflow.evaluation.checkpoint import GcsCheckpoint, checkpoint_lock
    from sftflow.infra import storage
    from tests.test_evaluation import FakeGenerator, make_examples, run

    ckpt = f"{gcs_bucket}/runs/r/checkpoints/base-0123456789abcdef"
    examples = make_examples(12)
    first = FakeGenerator(fail_rate=0.0)
    run(first, examples[:7], ckpt, concurrency=3)
    assert len(storage.list_uris(ckpt)) == 7  # one object per finished example

    with checkpoint_lock(ckpt, ttl=30):  # a live writer elsewhere: a second one fails at once, naming it
        with pytest.raises(CheckpointBusy, match=rf"{ckpt}: another process is writing it \(pid {os.getpid()} on "):
            run(FakeGenerator(), examples, ckpt, lease_ttl=30)

    second = FakeGenerator()  # "machine B": no local state, the bucket's checkpoint only
    results = run(second, examples, ckpt, concurrency=3)
    assert all(r.scored for r in results) and [r.id for r in results] == [e.id for e in examples]
    assert sorted(second.calls) == sorted(e.input_text for e in examples[7:])  # only the missing ones
    assert len(storage.list_uris(ckpt)) == 1 + 5  # load compacted the first 7 into one object
    assert set(GcsCheckpoint(ckpt).load()) == {e.id for e in examples}
    assert not storage.exists(ckpt + ".lease")  # released
