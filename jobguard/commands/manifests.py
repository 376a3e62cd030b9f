"""Manifests as the commands use them: checked, signed, fenced, merged, and indexed.

- load: the document is checked against the schema, its deploy id against its name, its
  account and region against the credentials', and its signature against the key;
- save: only under the leases the run still holds (`fence`), signed, conditional on the version
  read; a conflicting write by another run of the same deploy (matrix legs share a run id) is
  read back and merged record by record, never overwritten;
- pages: records are kept, hashed and written in pages of `PAGE_RECORDS`, in the order they were
  first saved (`Layout`); the signature covers the header and every page's digest
  (domain/pages.py), so a save hashes and writes only the pages it changed: O(page), not O(manifest);
- elision (`elide`, restore's reads): records read from stored pages are held without their
  submissions (domain/elision.py); `whole` reads a page's submissions back, checked against the
  digest the signature covers, for the jobs about to be sent, and a save fills the records of the
  pages it rewrites the same way. Restore so holds a bounded number of whole records, not 100 000;
- the index of open deploys (`open/DEPLOY_ID` documents) lets a restore with nothing to do make a
  bounded number of store calls however many deploys the store has seen.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..adapters.signing import Signer
from ..adapters.stores import Page, Store, Versioned
from ..domain import elision
from ..domain.manifest import JobRecord, Manifest, now, records_of
from ..domain.pages import PAGED, WHOLE, manifest_digest, page_digest
from ..domain.schema import integral
from ..errors import ConflictError, ManifestError, SignatureError, StoreError, UnreachableError
from ..output.report import Reporter

MERGE_ATTEMPTS = 8
PAGE_RECORDS = 500  # records per page: drain and restore save about this many at a time


@dataclass
class Layout:
    """A manifest's records in pages, as last read or written: page n holds order[n*size : (n+1)*size]."""

    size: int
    order: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    stored: bool = True  # False: the store holds it whole (written before pages): the next save writes every page
    position: dict[str, int] = field(default_factory=dict)
    elided: bool = False  # records may be held without their submissions: each page's are read back from the store

    def extend(self, job_ids: list[str]) -> None:
        """Place new records after the last."""
        for job_id in job_ids:
            self.position[job_id] = len(self.order)
            self.order.append(job_id)


class ForeignManifestError(ManifestError):
    """A manifest of another account or region: skipped by a restore of everything, refused when named."""


@dataclass
class Manifests:
    """Loads and saves the manifests of one store for one account and region."""

    store: Store
    signer: Signer | None  # None: unsigned (the `unsigned` setting)
    account: str
    region: str
    report: Reporter
    fence: Callable[[], None] = lambda: None
    elide: bool = False  # hold records read from stored pages without their submissions (restore: domain/elision.py)
    versions: dict[str, str | None] = field(default_factory=dict)
    committed: dict[str, dict[str, JobRecord]] = field(default_factory=dict)  # deploy -> the records as last read or written
    layouts: dict[str, Layout] = field(default_factory=dict)  # deploy -> its pages as last read or written
    # deploy -> version, manifest, pages last read, and whether it was read to be elided
    _read: dict[str, tuple[str, Manifest, Layout, bool]] = field(default_factory=dict)
    _opened: set[str] = field(default_factory=set)

    def new(self, deploy_id: str, origin: dict[str, str]) -> Manifest:
        """An empty manifest for this account and region."""
        stamp = now()
        manifest = Manifest(deploy_id, self.account, self.region, stamp, stamp, origin=origin)
        self.versions[deploy_id] = None
        self.committed[deploy_id] = {}
        self.layouts[deploy_id] = Layout(PAGE_RECORDS)
        return manifest

    def load(self, deploy_id: str) -> Manifest | None:
        """The checked manifest of `deploy_id`, or None when there is none.

        Read again while its version is still the one last read (restore reads each manifest once to
        choose, then again under its leases), the manifest checked then is not read and checked again.
        """
        read = self._read.get(deploy_id)
        if read is not None and read[3] == self.elide and self.store.version(deploy_id) == read[0]:
            version, manifest, layout, _ = read
        else:
            fetched = self._fetch(deploy_id)
            if fetched is None:
                self._opened.discard(deploy_id)
                return None
            version, manifest, layout = fetched
            self._read[deploy_id] = (version, _copy(manifest), layout, self.elide)
        if not manifest.has_work_left:
            # Another run may have saved it so and be dropping its index entry (a save merged onto its write reads it
            # here too): work this run saves there indexes the deploy again, and confirms it.
            self._opened.discard(deploy_id)
        self.versions[deploy_id] = version
        self.committed[deploy_id] = dict(manifest.jobs)
        self.layouts[deploy_id] = replace(layout, order=list(layout.order), digests=list(layout.digests), position=dict(layout.position))
        return _copy(manifest)

    def _fetch(self, deploy_id: str, keep: frozenset[str] = frozenset()) -> tuple[str, Manifest, Layout] | None:
        """The stored manifest, parsed and checked; read again when a save replaced it while it was read.

        Under `elide`, the records of stored pages are held without their submissions, but those of `keep`.
        """
        elide = self.elide
        for _ in range(MERGE_ATTEMPTS):
            found = self.store.load(deploy_id)
            if found is None:
                return None
            try:
                version, manifest, layout = self._parsed(found, deploy_id, elide, keep)
            except ConflictError:
                continue
            if layout.elided and not layout.stored:
                elide = False  # a page no longer stored under its own name cannot be read back: held whole (read again)
                continue
            return version, manifest, layout
        raise StoreError(f"{self.store.uri(deploy_id)}: other writers kept replacing the manifest while it was read")

    def _parsed(
        self, found: Versioned, deploy_id: str, elide: bool = False, keep: frozenset[str] = frozenset()
    ) -> tuple[str, Manifest, Layout]:
        """The version, the manifest and its pages' digests, from a whole document or page by page (never all its JSON at once)."""
        where = self.store.uri(deploy_id)
        if found.pages is None:
            manifest = Manifest.from_document(found.value, where)
        else:
            manifest = Manifest.from_document({**found.value, "jobs": []}, where)
        # Whose manifest it is, before any page is read: a head copied or dropped in from elsewhere names pages that are not here.
        self._check_head(manifest, deploy_id, where)
        size = found.value.get("page_records", PAGE_RECORDS)
        layout = Layout(size, stored=not found.whole, elided=elide and found.pages is not None)
        if found.pages is None:
            jobs = found.value["jobs"]
            layout.digests = [page_digest(jobs[start : start + size]) for start in range(0, len(jobs), size)]
            self._check_records(manifest, where)
        else:
            short = False  # only the last page may hold fewer than `size` records
            for index, records in enumerate(found.pages()):
                if short or not records or len(records) > size:
                    raise ManifestError(f"{where}: page {index} holds {len(records)} records, pages hold {size}: pages were edited")
                short = len(records) < size
                page = Manifest.from_document({**found.value, "jobs": records}, f"{where} page {index}")
                self._check_records(page, where)  # before its submissions are let go
                for job_id, record in page.jobs.items():
                    if job_id in manifest.jobs:
                        raise ManifestError(f"{where} page {index}: job {job_id} is recorded twice")
                    manifest.jobs[job_id] = elision.elide(record) if layout.elided and job_id not in keep else record
                layout.digests.append(page_digest(records))  # as stored: what a save hashed (`_plain` of each record)
            if found.settled is not None:  # a save during the read: the records are those of the head it put in place
                found = found.settled()
                manifest = replace(Manifest.from_document({**found.value, "jobs": []}, where), jobs=manifest.jobs)
            # A page edited in place keeps its old name: the next save writes every page, under the names of their records.
            layout.stored = found.named is None or layout.digests == list(found.named)
        layout.extend(list(manifest.jobs))
        self._check(manifest, deploy_id, where, layout)
        return found.version, manifest, layout

    def _check_head(self, manifest: Manifest, deploy_id: str, where: str) -> None:
        if manifest.deploy_id != deploy_id:
            raise ManifestError(f"{where}: the manifest says deploy {manifest.deploy_id!r}, its name says {deploy_id!r}: a copy or an edit")
        if (manifest.account, manifest.region) != (self.account, self.region):
            raise ForeignManifestError(
                f"{where}: manifest of account {manifest.account} in {manifest.region}; the credentials are for account "
                f"{self.account} in {self.region}"
            )

    def _check(self, manifest: Manifest, deploy_id: str, where: str, layout: Layout) -> None:
        self._check_head(manifest, deploy_id, where)  # again: a save during the read may have put another head in place
        self._verify(manifest, where, layout)

    def _check_records(self, records: Iterable[JobRecord], where: str) -> None:
        prefix = re.compile(rf"arn:aws[a-z-]*:batch:{re.escape(self.region)}:{re.escape(self.account)}:job/")
        for record in records:
            if not prefix.match(record.job_arn) or not record.job_arn.endswith(f"/{record.job_id}"):
                raise ManifestError(f"{where}: job {record.job_id}: its ARN {record.job_arn} is not of this job in this account and region")
            if record.submission.get("jobName") != record.job_name:
                raise ManifestError(f"{where}: job {record.job_id}: submission jobName differs from job_name")

    def _verify(self, manifest: Manifest, where: str, layout: Layout) -> None:
        if self.signer is None:
            if manifest.signature is not None:
                self.report.warning(f"{where}: signed, but signing is off (unsigned: true): the signature is not checked")
            return
        if manifest.signature is None:
            raise SignatureError(
                f"{where}: the manifest is not signed",
                hint="it may have been written by hand or by a jobguard without signing; accept it once with --unsigned after checking it",
            )
        algorithm = manifest.signature.get("algorithm")
        if algorithm == PAGED:
            digests = [manifest_digest(_header(manifest), layout.size, layout.digests)]
        else:  # a whole document, from before pages: with the record fields of its time
            digests = [manifest.digest(), manifest.digest(without_later_fields=True)]
        if (
            manifest.signature.get("key") != self.signer.key
            or algorithm not in (PAGED, WHOLE)
            or not any(self.signer.verify(digest, manifest.signature["mac"]) for digest in digests)
        ):
            raise SignatureError(
                f"{where}: the manifest's signature does not verify with {self.signer.key}: it was changed after jobguard wrote it",
                hint="compare it with its earlier versions in the store; restore acts on nothing it cannot verify",
            )

    def save(self, manifest: Manifest) -> None:
        """Write the manifest under the run's leases; a conflicting write is merged record by record.

        A store that can write only so many records at once (DynamoDB: one transaction) gets the
        changes in steps, each a whole signed manifest: a save interrupted between two steps leaves
        the last complete step, never a mix that no longer verifies.
        """
        opening = False  # this save indexes the deploy: it confirms the entry once the manifest is written
        for _ in range(MERGE_ATTEMPTS):
            self.fence()
            if manifest.deploy_id not in self._opened and manifest.has_work_left:
                self._mark_open(manifest.deploy_id)
                opening = True
            # Read before the write that shows nothing is left, so that the entry dropped is the one a run that
            # saves work after this write cannot have confirmed yet (see `_confirm_open`).
            closing = None if manifest.has_work_left else self.index_entry(manifest.deploy_id)
            manifest.updated_at = now()
            read_back: set[str] = set()  # records of the pages written, held whole while the next step writes them too
            try:
                steps = self._steps(manifest)
                for n, step in enumerate(steps):
                    self._write(manifest, step, read_back)
                    self._let_go(manifest, read_back, self._pages_of(manifest.deploy_id, steps[n + 1] if n + 1 < len(steps) else []))
            except ConflictError:
                self._merge(manifest)
                continue
            finally:
                self._let_go(manifest, read_back, set())
            manifest.released_queues.clear()
            manifest.window_changed = False
            if opening and manifest.has_work_left:
                self._confirm_open(manifest.deploy_id)
            if closing is not None:
                self.forget_index(manifest.deploy_id, closing)
            return
        raise ConflictError(
            f"{self.store.uri(manifest.deploy_id)}: other writers kept changing the manifest; gave up after {MERGE_ATTEMPTS} tries"
        )

    def _steps(self, manifest: Manifest) -> list[list[str]]:
        """The changed job ids, in as many atomic writes as the store needs (at least one: the header may have changed)."""
        committed = self.committed.setdefault(manifest.deploy_id, {})
        fresh = sum(1 for i in manifest.changed if i not in committed)
        if len(manifest.jobs) == len(committed) + fresh:
            # Every record not yet written is a changed one (records are only ever added): O(changes), not a
            # look at all 100 000 records for each page saved. Changed ids are in the order they were put.
            changed = [i for i in manifest.changed if i in manifest.jobs]
        else:
            changed = [i for i in manifest.jobs if i in manifest.changed or i not in committed]
        limit = getattr(self.store, "atomic_records", 0)
        if not limit or len(changed) <= limit:
            return [changed]
        return [changed[start : start + limit] for start in range(0, len(changed), limit)]

    def _write(self, manifest: Manifest, ids: list[str], read_back: set[str]) -> None:
        """One conditional write of a whole, signed manifest: the committed records with the changes of `ids` applied.

        Only the pages holding a record of `step` are hashed and handed to the store with their records. Under
        elision, the records of those pages are left whole, named in `read_back` (`_let_go` lets their submissions
        go): a store that takes a page's changes in several steps (DynamoDB) reads the page back once, not every step.
        """
        deploy_id = manifest.deploy_id
        committed, layout = self.committed.setdefault(deploy_id, {}), self.layouts.setdefault(deploy_id, Layout(PAGE_RECORDS))
        step = set(ids)
        added = [i for i in ids if i not in layout.position]
        order = layout.order + added if added else layout.order
        size = layout.size
        places = {
            **{i: layout.position[i] for i in step if i in layout.position},
            **{i: len(layout.order) + k for k, i in enumerate(added)},
        }
        touched = {place // size for place in places.values()}
        pages = []
        for index in range(-(-len(order) // size)):
            if layout.stored and index not in touched and index < len(layout.digests):
                pages.append(Page(index, layout.digests[index]))
                continue
            ids = order[index * size : (index + 1) * size]
            held = [manifest.jobs[i] if i in step else committed[i] for i in ids]
            held = self.whole(manifest, held)  # the page as stored gives back the submissions held elided
            if layout.elided:
                unchanged = [r for r in held if r.job_id not in step]
                committed.update((r.job_id, r) for r in unchanged)
                read_back.update(r.job_id for r in unchanged)
            records = [_plain(r) for r in held]
            pages.append(Page(index, page_digest(records), tuple(records), frozenset(step.intersection(ids))))
        head: dict[str, Any] = {**_header(manifest), "page_records": size}
        signature = None
        if self.signer is not None:
            digest = manifest_digest(_header(manifest), size, [p.digest for p in pages])
            signature = {"key": self.signer.key, "algorithm": PAGED, "mac": self.signer.sign(digest)}
            head["signature"] = signature
        self.fence()
        self._read.pop(deploy_id, None)
        self.versions[deploy_id] = self.store.save(deploy_id, head, pages, self.versions.get(deploy_id))
        committed.update({i: manifest.jobs[i] for i in step})
        layout.extend(added)
        layout.digests, layout.stored = [p.digest for p in pages], True
        if layout.elided:  # their submissions are in the pages just written: let go of by `_let_go`
            read_back.update(step)
        for job_id in step:
            manifest.changed.pop(job_id, None)
        manifest.signature = signature

    def _pages_of(self, deploy_id: str, ids: list[str]) -> set[int]:
        """The pages a step of `ids` writes: theirs, and the last (where records not yet placed go)."""
        layout = self.layouts[deploy_id]
        pages = {layout.position[i] // layout.size for i in ids if i in layout.position}
        return pages | {len(layout.order) // layout.size} if any(i not in layout.position for i in ids) else pages

    def _let_go(self, manifest: Manifest, read_back: set[str], keep: set[int]) -> None:
        """The submissions of the records `read_back` names, let go but on the pages `keep` (the next step's)."""
        committed, layout = self.committed.get(manifest.deploy_id, {}), self.layouts.get(manifest.deploy_id)
        for job_id in list(read_back):
            if layout is not None and layout.position.get(job_id, -1) // layout.size in keep:
                continue
            read_back.discard(job_id)
            if job_id in committed:
                committed[job_id] = elision.elide(committed[job_id])
            if job_id in manifest.jobs and job_id not in manifest.changed:
                manifest.jobs[job_id] = committed.get(job_id) or elision.elide(manifest.jobs[job_id])

    def whole(self, manifest: Manifest, records: list[JobRecord]) -> list[JobRecord]:
        """`records` with their submissions, those held elided read back from their pages (checked against the
        digests the signature covers): a page at a time, never more than the records asked for kept."""
        wanted = {r.job_id for r in records if elision.elided(r)}
        if not wanted:
            return records
        deploy_id, layout = manifest.deploy_id, self.layouts[manifest.deploy_id]
        by_page: dict[int, set[str]] = {}
        for job_id in wanted:
            by_page.setdefault(layout.position.get(job_id, -1) // layout.size, set()).add(job_id)
        found: dict[str, dict[str, Any]] = {}
        for index, ids in sorted(by_page.items()):
            page = self._stored_page(manifest, index) if 0 <= index < len(layout.digests) else None
            found.update({i: r.submission for i, r in (page or {}).items() if i in ids})
        if len(found) < len(wanted):  # another run's save replaced a page since it was read: the manifest read again, checked
            fetched = self._fetch(deploy_id, keep=frozenset(wanted - set(found)))
            jobs = fetched[1].jobs if fetched is not None else {}
            found.update({i: jobs[i].submission for i in wanted - set(found) if i in jobs and not elision.elided(jobs[i])})
        if len(found) < len(wanted):
            raise ManifestError(f"{self.store.uri(deploy_id)}: jobs {sorted(wanted - set(found))[:5]}: no longer recorded")
        return [replace(r, submission=found[r.job_id]) if r.job_id in wanted else r for r in records]

    def _stored_page(self, manifest: Manifest, index: int) -> dict[str, JobRecord] | None:
        """Page `index` as last read or written (whole records), or None when the store no longer holds it.

        Its name is its digest, which the signature covers: records that no longer hash to it were changed since,
        by a save (the manifest's version moved on since this run read or wrote it: None, read again) or by hand.
        """
        layout, where = self.layouts[manifest.deploy_id], self.store.uri(manifest.deploy_id)
        digest, ids = layout.digests[index], layout.order[index * layout.size : (index + 1) * layout.size]
        records = self.store.page(manifest.deploy_id, index, digest, ids)
        if records is None:
            return None
        if page_digest(records) != digest:
            if self.store.version(manifest.deploy_id) != self.versions.get(manifest.deploy_id):
                return None  # saved by another run since this one read or wrote the page: `whole` reads the manifest again
            raise SignatureError(
                f"{where} page {index}: its records no longer hash to the digest the signature covers: changed after jobguard wrote it",
                hint="compare it with its earlier versions in the store; restore acts on nothing it cannot verify",
            )
        # The records that hash to a digest the signature covers were checked when read or made when written: not again.
        return records_of(integral(records), f"{where} page {index}")

    def _merge(self, manifest: Manifest) -> None:
        """Read back what the other writer saved and put this run's changes on top of it."""
        self.fence()  # a run that lost its lease must not merge its way past the new holder
        theirs = self.load(manifest.deploy_id)
        if theirs is None:
            self.versions[manifest.deploy_id] = None
            manifest.changed.update(dict.fromkeys(manifest.jobs))
            return
        merged = manifest.merged_onto(theirs)
        manifest.jobs, manifest.queues, manifest.frozen_queues = merged.jobs, merged.queues, merged.frozen_queues
        manifest.queue_successors, manifest.window = merged.queue_successors, merged.window
        manifest.changed = merged.changed
        manifest.created_at = theirs.created_at

    def open_ids(self) -> list[str]:
        """Deploy ids whose manifests may still have work left (the index: one listing, however long the history)."""
        return self.store.keys("open")

    def index_entry(self, deploy_id: str) -> Versioned | None:
        """The deploy's entry in the index of open deploys, as it is now."""
        return self.store.read(f"open/{deploy_id}")

    def _mark_open(self, deploy_id: str) -> None:
        """Index the deploy as open before its manifest can hold work (so it is never missed)."""
        if self.index_entry(deploy_id) is None:
            with suppress(ConflictError):  # another run of the deploy indexed it just now
                self.store.write(f"open/{deploy_id}", _entry(deploy_id), None)
        self._opened.add(deploy_id)

    def _confirm_open(self, deploy_id: str) -> None:
        """Once the manifest holds work, give the deploy's entry a new version (or write it again if it is gone).

        A run that drops an entry read it before the manifest that showed nothing left, and drops only the
        version it read: if it read the manifest before this run's write, its drop either fails on the new
        version or came first, and this finds the entry gone.
        """
        for _ in range(MERGE_ATTEMPTS):
            found = self.index_entry(deploy_id)
            try:
                self.store.write(f"open/{deploy_id}", _entry(deploy_id), None if found is None else found.version)
                return
            except ConflictError:
                continue  # changed meanwhile, by another run of the deploy: look again

    def forget_index(self, deploy_id: str, entry: Versioned) -> None:
        """Drop the deploy's index entry, if still at `entry`: read before a manifest that was gone or had nothing left."""
        try:
            self.store.delete(f"open/{deploy_id}", entry.version)
        except ConflictError:
            return  # a run saved work meanwhile, and said so
        except UnreachableError as exc:  # the manifest is saved: a stale entry only costs the next restore one look
            self.report.warning(f"{self.store.location()} open/{deploy_id}: index entry not removed ({exc}); the next restore removes it")
            return
        self._opened.discard(deploy_id)


def _entry(deploy_id: str) -> bytes:
    """An index entry; its nonce makes each one a new version where a version is the content's hash (S3, folder)."""
    return json.dumps({"deploy_id": deploy_id, "written": now(), "nonce": secrets.token_hex(8)}).encode()


FIELDS = tuple(f.name for f in fields(JobRecord))


def _plain(record: JobRecord) -> dict[str, Any]:
    """The record as stored and hashed: `asdict` without its deep copy (records are never changed in place)."""
    return {name: getattr(record, name) for name in FIELDS}


def _copy(manifest: Manifest) -> Manifest:
    """A manifest of its own (its header copied), sharing the records, which are frozen."""
    copied = copy.deepcopy(replace(manifest, jobs={}))
    copied.jobs = dict(manifest.jobs)
    return copied


def _header(manifest: Manifest) -> dict[str, Any]:
    """The manifest's document without records or signature (a copy without jobs: no record is serialised)."""
    document = replace(manifest, jobs={}, signature=None).unsigned_document()
    del document["jobs"]
    return document
