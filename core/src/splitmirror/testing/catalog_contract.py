"""The catalog contract: what every catalog must do, the built-in SQLite file and a plugin's.

Subclass :class:`CatalogContract` in your catalog's tests and provide a ``splitmirror_catalog_address``
fixture returning the :class:`~splitmirror.catalog.CatalogAddress` of a new, empty catalog (a
database with no tables in it for a server catalog; a path not yet there for a file).  The
suite opens it as splitmirror does (:func:`~splitmirror.catalog.open_catalog`, the catalog
found by its URL scheme) and checks, with real processes where it matters:

- a reading command never creates a catalog; the first writer does, and many at once agree;
- a session's row, phases, files (extent maps too) and summary read back as written; an unknown
  session is one sentence;
- prune's marks and drills' rows keep their rules (``PRUNING`` only once, a finished drill never
  closed again);
- one prune at a time across processes, and a drill whose process was SIGKILLed is closed
  ``FAILED`` by the next while a live one is left alone;
- processes writing sessions at once each get their own id and rows;
- ``copy_in`` keeps a session's id (archives are named by it), and the ids after it follow;
- a split handed over is one mirror's one outstanding split, its parcels read back, each claim
  goes to one worker (processes claiming at once included), a lease that ran out passes the split
  to the next worker, and only the worker holding it can finish it.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from ..catalog import Catalog, CatalogAddress, DrillRecord, FileRecord, PhaseRecord, open_catalog
from ..catalog.base import ARCHIVED, ARCHIVING, DONE, FAILED, PRUNED, PRUNING, STARTED, WAITING
from ..errors import CatalogError, SessionBusyError


def _row(catalog: Catalog, name: str = "orders", started_at: str = "2026-12-01T01:00:00.000+00:00") -> int:
    return catalog.start_session(
        name=name, mode="freeze", database="sqlite", database_url="sqlite:///db", config="/etc/c.toml",
        started_at=started_at,
    )  # fmt: skip


def _child(
    address: CatalogAddress, body: str, gate: Path | None = None, *, opened: bool = False
) -> subprocess.Popen[str]:
    """A process of its own that opens the catalog as splitmirror does and runs ``body``.  With
    a ``gate``, it says ``ready`` and waits for the gate file before it opens the catalog (or,
    ``opened``, before ``body``), so that processes started one after another race for real
    (:func:`_at_once`)."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from splitmirror.catalog import CatalogAddress, open_catalog

        def gate():
            print("ready", flush=True)
            while not os.path.exists(sys.argv[2]):
                time.sleep(0.0005)

        if sys.argv[2] and sys.argv[3] == "open":
            gate()
        catalog = open_catalog(CatalogAddress(sys.argv[1]))
        if sys.argv[2] and sys.argv[3] == "body":
            gate()
        """
    ) + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", script, address.text, str(gate or ""), "body" if opened else "open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _at_once(
    address: CatalogAddress, body: str, gate: Path, count: int, *, opened: bool = False
) -> list[str]:
    """``count`` children open the catalog (``opened``: run ``body``) from the moment the last
    of them is ready; their output."""
    children = [_child(address, body, gate, opened=opened) for _ in range(count)]
    try:
        for child in children:
            assert _line(child) == "ready"
        gate.touch()
        said = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            said.append(out.strip())
        return said
    finally:
        for child in children:
            child.kill()


def _line(process: subprocess.Popen[str]) -> str:
    """The child's first line of output: it says when it holds what it was asked to hold."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line:
        raise AssertionError(f"the child said nothing: {process.communicate()[1]}")
    return line


class CatalogContract:
    """Subclass in a catalog's tests; provide ``splitmirror_catalog_address`` (see the module docstring)."""

    @pytest.fixture
    def catalog(self, splitmirror_catalog_address: CatalogAddress) -> Iterator[Catalog]:
        with closing(open_catalog(splitmirror_catalog_address, create=True)) as opened:
            yield opened

    def test_a_reading_open_never_creates_a_catalog(
        self, splitmirror_catalog_address: CatalogAddress
    ) -> None:
        with pytest.raises(CatalogError, match="there is no catalog"):
            open_catalog(splitmirror_catalog_address, create=False)
        open_catalog(splitmirror_catalog_address, create=True).close()
        open_catalog(splitmirror_catalog_address, create=False).close()  # now it is there

    def test_many_processes_creating_it_at_once_agree(
        self, splitmirror_catalog_address: CatalogAddress, tmp_path: Path
    ) -> None:
        body = """
            print(catalog.start_session(name="n", mode="freeze", database="d", database_url="u", config="c",
                                        started_at="t"))
        """
        ids = [int(out) for out in _at_once(splitmirror_catalog_address, body, tmp_path / "gate", 8)]
        assert sorted(ids) == sorted(set(ids)), "each process its own session"

    def test_a_session_reads_back_as_written(self, catalog: Catalog) -> None:
        sid = _row(catalog)
        assert catalog.get(sid).status == STARTED
        catalog.record_phase(sid, PhaseRecord("INIT", "2026-12-01T01:00:00.000+00:00", 1.5))
        catalog.record_phase(sid, PhaseRecord("SYNC", "2026-12-01T01:00:01.000+00:00", 20.25, "slow"))
        files = [
            FileRecord(1, "data/main.db", "/p/main.db", (0, "main"), "data", 8192, "ab" * 32, 0, "extent",
                       [(0, 4096, 8192)]),
            FileRecord(2, "MANIFEST.json", "", (9,), "manifest", 10, "cd" * 32, 9216, "generated"),
        ]  # fmt: skip
        catalog.add_files(sid, files)
        catalog.update_session(
            sid, window_ms=12.5, blocked_ms=3.0, files=2, bytes=8202, archive="/a/orders-1.tar",
            server_version="3.45", label="x", redo_range={"start": "0/1"}, stats={"check": {"new": 1}},
        )  # fmt: skip
        catalog.finish_session(sid, status=DONE, finished_at="2026-12-01T01:00:09.000+00:00")
        row = catalog.get(sid)
        assert (row.status, row.window_ms, row.blocked_ms, row.files, row.bytes) == (DONE, 12.5, 3.0, 2, 8202)
        assert (row.archive, row.server_version, row.label) == ("/a/orders-1.tar", "3.45", "x")
        assert row.redo_range == {"start": "0/1"} and row.stats == {"check": {"new": 1}}
        phases = [(p.name, p.duration_ms, p.error) for p in row.phases]
        assert phases == [("INIT", 1.5, None), ("SYNC", 20.25, "slow")]
        assert catalog.files(sid) == files
        with pytest.raises(ValueError, match="not updatable"):
            catalog.update_session(sid, status=DONE)
        catalog.update_session(sid)  # nothing to set: nothing changes
        assert catalog.get(sid) == row

    def test_sessions_filter_and_order(self, catalog: Catalog) -> None:
        first = _row(catalog, started_at="2026-12-01T01:00:00.000+00:00")
        second = _row(catalog, started_at="2026-12-02T01:00:00.000+00:00")
        catalog.finish_session(first, status=FAILED, finished_at="t", failed_phase="MAP", error="boom")
        assert [s.id for s in catalog.sessions()] == [first, second]
        assert [s.id for s in catalog.sessions(status=FAILED)] == [first]
        assert [s.id for s in catalog.sessions(since="2026-12-02T00:00:00.000+00:00")] == [second]
        assert [s.id for s in catalog.sessions(database="oracle")] == []
        failed = catalog.get(first)
        assert (failed.failed_phase, failed.error) == ("MAP", "boom")

    def test_an_unknown_session_is_one_sentence(self, catalog: Catalog) -> None:
        with pytest.raises(CatalogError, match="there is no session 4711 in the catalog"):
            catalog.get(4711)

    def test_prune_marks_each_happen_once(self, catalog: Catalog) -> None:
        sid = _row(catalog)
        catalog.mark_pruning(sid, at="t1", why="one of the last 3")
        catalog.mark_pruning(sid, at="t2", why="again")  # a second prune finds it PRUNING: kept as is
        row = catalog.get(sid)
        assert (row.pruned, row.pruned_at, row.pruned_why) == (PRUNING, "t1", "one of the last 3")
        catalog.mark_pruned(sid, at="t3")
        assert (catalog.get(sid).pruned, catalog.get(sid).pruned_at) == (PRUNED, "t3")

    def test_drills_are_recorded_and_finished_once(self, catalog: Catalog) -> None:
        sid, other = _row(catalog), _row(catalog, name="billing")
        drill = catalog.start_drill(sid, name="orders", started_at="t")
        catalog.start_drill(other, name="billing", started_at="t")
        finished = dict(finished_at="t2", duration_ms=5.0, route="host", checks=["integrity"], error=None)
        catalog.finish_drill(drill, status="PASSED", **finished)  # type: ignore[arg-type]
        catalog.finish_drill(drill, status=FAILED, **finished)  # type: ignore[arg-type]
        assert catalog.drills(name="orders") == [
            DrillRecord(drill, sid, "orders", "PASSED", "t", "t2", 5.0, "host", ["integrity"], None)
        ]
        assert [d.name for d in catalog.drills()] == ["orders", "billing"]
        assert [d.session_id for d in catalog.drills(session_id=other)] == [other]

    def test_one_prune_at_a_time_across_processes(self, splitmirror_catalog_address: CatalogAddress) -> None:
        open_catalog(splitmirror_catalog_address).close()
        holder = _child(splitmirror_catalog_address, """
            with catalog.one_prune_at_a_time(5):
                print("held", flush=True)
                time.sleep(600)
        """)  # fmt: skip
        try:
            assert _line(holder) == "held"
            with closing(open_catalog(splitmirror_catalog_address)) as catalog:
                busy = pytest.raises(SessionBusyError, match="another prune of the catalog")
                with busy, catalog.one_prune_at_a_time(0.5):
                    pass
                holder.kill()  # a prune killed outright lets go of the lock
                holder.wait()
                with catalog.one_prune_at_a_time(30):
                    pass
        finally:
            holder.kill()
            holder.communicate()

    def test_a_dead_drill_is_closed_and_a_live_one_left(
        self, splitmirror_catalog_address: CatalogAddress
    ) -> None:
        with closing(open_catalog(splitmirror_catalog_address)) as catalog:
            sid = _row(catalog)
        body = f"""
            drill, let_go = catalog.drill_started({sid}, name="orders", started_at="t", abandoned=print)
            print("drill", drill, flush=True)
            time.sleep(600)
        """
        dead, live = _child(splitmirror_catalog_address, body), None
        try:
            dead_id = int(_line(dead).split()[1])
            dead.send_signal(signal.SIGKILL)
            dead.wait()
            live = _child(splitmirror_catalog_address, body)
            assert _line(live) == str(dead_id), "the next drill hands the dead one's id to `abandoned`"
            live_id = int(_line(live).split()[1])
            with closing(open_catalog(splitmirror_catalog_address)) as catalog:
                closed: list[int] = []
                mine, let_go = catalog.drill_started(
                    sid, name="orders", started_at="t", abandoned=closed.append
                )
                assert closed == [], "a drill whose process lives is left RUNNING"
                rows = {d.id: d for d in catalog.drills()}
                assert rows[dead_id].status == FAILED and "process ended" in (rows[dead_id].error or "")
                assert rows[live_id].status == rows[mine].status == "RUNNING"
                catalog.finish_drill(mine, status="PASSED", finished_at="t", duration_ms=1.0, route="",
                                     checks=[], error=None)  # fmt: skip
                let_go()
        finally:
            for child in (dead, live):
                if child is not None:
                    child.kill()
                    child.communicate()

    def test_processes_writing_at_once_get_their_own_rows(
        self, splitmirror_catalog_address: CatalogAddress
    ) -> None:
        open_catalog(splitmirror_catalog_address).close()
        body = """
            from splitmirror.catalog import FileRecord, PhaseRecord
            for _ in range(5):
                sid = catalog.start_session(name="n", mode="freeze", database="d", database_url="u",
                                            config="c", started_at="t")
                catalog.record_phase(sid, PhaseRecord("INIT", "t", 1.0))
                catalog.add_files(sid, [FileRecord(i, f"m{i}", "", (i,), "data", i, "x", i, "file")
                                        for i in range(1, 50)])
                catalog.record_phase(sid, PhaseRecord("SYNC", "t", 1.0))
                catalog.finish_session(sid, status="DONE", finished_at="t")
                print(sid, flush=True)
        """
        children = [_child(splitmirror_catalog_address, body) for _ in range(4)]
        ids: list[int] = []
        for child in children:
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0, err
            ids += [int(line) for line in out.split()]
        assert len(set(ids)) == 20
        with closing(open_catalog(splitmirror_catalog_address)) as catalog:
            for sid in ids:
                row = catalog.get(sid)
                assert row.status == DONE and [p.name for p in row.phases] == ["INIT", "SYNC"]
                assert [f.seq for f in catalog.files(sid)] == list(range(1, 50))

    def test_copy_in_keeps_ids_and_later_ids_follow(self, catalog: Catalog) -> None:
        files = [FileRecord(1, "a", "/p/a", (0, "a"), "data", 3, "ab", 0, "file")]
        source_id = 41
        template = _row(catalog)  # a session as the other catalog had it, under another id
        catalog.update_session(template, archive="/a/orders-41.tar", stats={"k": 1}, window_ms=9.5)
        catalog.record_phase(template, PhaseRecord("INIT", "t", 1.0))
        catalog.finish_session(template, status=DONE, finished_at="t2")
        catalog.mark_pruning(template, at="t4", why="outside the policy")
        moved = dataclasses.replace(catalog.get(template), id=source_id)
        drill = DrillRecord(7, source_id, "orders", "PASSED", "t", "t3", 2.0, "host", ["ok"], None)
        catalog.copy_in(moved, files, [drill])
        assert catalog.get(source_id) == moved
        assert catalog.files(source_id) == files
        assert catalog.drills(session_id=source_id) == [drill]
        with pytest.raises(CatalogError, match="already has a session 41"):
            catalog.copy_in(moved, files, [])
        assert _row(catalog) > source_id, "a new session never takes a copied one's id"
        assert catalog.start_drill(source_id, name="orders", started_at="t") > 7

    # -- off-host: splits handed over ----------------------------------------------------------

    def _handed_over(self, catalog: Catalog, identity: str = "loop:/images/mirror-a.img") -> int:
        sid = _row(catalog)
        catalog.record_phase(sid, PhaseRecord("UNQUIESCE", "t", 1.0, host="db1"))
        record = {"files": [{"path": "/srv/db/main.db", "extents": [[0, 4096, 8192, 0]]}]}
        catalog.hand_over(
            sid, identity=identity, host="db1", record=record, parcels=[b"label", b"\0" * 70000]
        )
        return sid

    def test_a_split_is_claimed_once_and_finished_by_its_worker(self, catalog: Catalog) -> None:
        sid = self._handed_over(catalog)
        (waiting,) = catalog.handovers(outstanding=True)
        assert (waiting.session_id, waiting.state, waiting.host, waiting.worker) == (
            sid,
            WAITING,
            "db1",
            None,
        )
        assert waiting.record["files"][0]["extents"] == [[0, 4096, 8192, 0]]
        assert catalog.parcel(sid, 0) == b"label" and catalog.parcel(sid, 1) == b"\0" * 70000
        assert catalog.get(sid).phases[0].host == "db1"
        with pytest.raises(CatalogError, match="already holds session"):
            catalog.hand_over(_row(catalog), identity=waiting.identity, host="db2", record={}, parcels=[])
        assert catalog.claim_split(worker="b1:1", identities=["loop:/images/other.img"], lease_s=60) is None
        claimed = catalog.claim_split(worker="b1:1", identities=[waiting.identity], lease_s=60)
        assert claimed is not None and (claimed.state, claimed.worker, claimed.attempts) == (
            ARCHIVING,
            "b1:1",
            1,
        )
        assert catalog.claim_split(worker="b2:1", identities=[waiting.identity], lease_s=60) is None
        assert catalog.renew_lease(sid, worker="b1:1", lease_s=60)
        assert not catalog.renew_lease(sid, worker="b2:1", lease_s=60)
        files = [FileRecord(1, "main.db", "/srv/db/main.db", (0,), "data", 8192, "ab", 0, "extent")]
        catalog.record_phase(sid, PhaseRecord("BACKUP", "t", 5.0, host="b1"))
        assert catalog.finish_handover(
            sid, worker="b1:1", archived=True, files=files, fields={"archive": "/a/1.tar", "files": 1},
            finished_at="t9",
        )  # fmt: skip
        row = catalog.get(sid)
        assert (row.status, row.archive, row.files, row.finished_at) == (DONE, "/a/1.tar", 1, "t9")
        assert [(p.name, p.host) for p in row.phases] == [("UNQUIESCE", "db1"), ("BACKUP", "b1")]
        assert catalog.files(sid) == files
        assert [h.state for h in catalog.handovers()] == [ARCHIVED] and catalog.handovers(
            outstanding=True
        ) == []
        self._handed_over(catalog, waiting.identity)  # the mirror is free again

    def test_a_lapsed_lease_passes_the_split_to_the_next_worker(self, catalog: Catalog) -> None:
        sid = self._handed_over(catalog)
        identity = catalog.handovers()[0].identity
        first = catalog.claim_split(worker="b1:1", identities=[identity], lease_s=0.5)
        assert first is not None
        stale = [FileRecord(1, "half", "", (0,), "data", 1, "x", 0, "extent")]
        time.sleep(1.5)  # b1 died: its lease runs out
        second = catalog.claim_split(worker="b2:1", identities=[identity], lease_s=60)
        assert second is not None and (second.session_id, second.worker, second.attempts) == (sid, "b2:1", 2)
        assert not catalog.renew_lease(sid, worker="b1:1", lease_s=60)
        assert not catalog.finish_handover(
            sid, worker="b1:1", archived=True, files=stale, fields={}, finished_at="t"
        )
        assert catalog.get(sid).status == STARTED and catalog.files(sid) == []
        assert catalog.finish_handover(
            sid, worker="b2:1", archived=False, files=[], fields={}, finished_at="t", failed_phase="BACKUP",
            error="the device is gone",
        )  # fmt: skip
        row = catalog.get(sid)
        assert (row.status, row.failed_phase, row.error) == (FAILED, "BACKUP", "the device is gone")
        assert catalog.handovers()[0].state == FAILED, "a failed archive frees the mirror too"
        assert [h.session_id for h in catalog.handovers(session_id=sid)] == [sid]
        assert catalog.handovers(session_id=sid + 1000) == []

    def test_workers_claiming_at_once_each_take_their_own(
        self, splitmirror_catalog_address: CatalogAddress, tmp_path: Path
    ) -> None:
        with closing(open_catalog(splitmirror_catalog_address)) as catalog:
            sessions = [self._handed_over(catalog, f"loop:/images/m{n}.img") for n in range(12)]
        body = """
            while taken := catalog.claim_split(worker=f"w:{os.getpid()}", lease_s=600,
                                               identities=[f"loop:/images/m{n}.img" for n in range(12)]):
                print(taken.session_id, flush=True)
        """
        said = _at_once(splitmirror_catalog_address, body, tmp_path / "gate", 6, opened=True)
        claimed = [int(line) for out in said for line in out.split()]
        assert sorted(claimed) == sessions, "each split claimed once, by one worker"


__all__ = ["CatalogContract"]
