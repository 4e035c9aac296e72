"""The blob store: local directory, fsspec memory:// and file://, references and GC."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest

from taskloom.engine.blobs import (
    BLOB_KEY,
    BlobStore,
    FsspecBlobStore,
    LocalBlobStore,
    collect_garbage,
    externalize,
    internalize,
    is_ref,
    open_blob_store,
    ref_for,
    refs_in,
    store_all,
)
from taskloom.errors import (
    BlobCorruptedError,
    BlobNotFoundError,
    PayloadTooLargeError,
    StoreError,
    UserError,
)

pytestmark = pytest.mark.anyio

Store = LocalBlobStore | FsspecBlobStore


@pytest.fixture(params=["local", "memory", "fsspec-file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each kind of store, empty, in its own place."""
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    elif request.param == "fsspec-file":
        yield FsspecBlobStore((tmp_path / "blobs").as_uri())
    else:
        # The memory filesystem is process-wide: a unique root keeps tests apart.
        mem = FsspecBlobStore(f"memory://taskloom-test-{uuid.uuid4().hex}")
        yield mem
        if mem.fs.exists(mem.root):
            mem.fs.rm(mem.root, recursive=True)


def rel_path(ref: str) -> str:
    hexdigest = ref.removeprefix("sha256:")
    return f"{hexdigest[:2]}/{hexdigest[2:4]}/{hexdigest}"


def stored_files(store: Store) -> list[str]:
    """Every file under the store's root, relative to it."""
    if isinstance(store, LocalBlobStore):
        return sorted(
            p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()
        )
    return sorted(p[len(store.root) :].lstrip("/") for p in store.fs.find(store.root))


def write_raw(store: Store, rel: str, data: bytes) -> None:
    """Write a file under the store's root behind its back."""
    if isinstance(store, LocalBlobStore):
        path = store.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        key = f"{store.root}/{rel}"
        store.fs.makedirs(key.rsplit("/", 1)[0], exist_ok=True)
        store.fs.pipe_file(key, data)


async def all_refs(store: BlobStore) -> set[str]:
    return {ref async for ref in store.iter_refs()}


# --- put / get / exists / delete ------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256)) * 1000])
async def test_put_returns_the_sha256_and_get_gives_the_bytes_back(
    store: Store, data: bytes
) -> None:
    ref = await store.put(data)

    assert ref == "sha256:" + hashlib.sha256(data).hexdigest() == ref_for(data)
    assert await store.get(ref) == data
    assert await store.exists(ref)
    assert not await store.exists(ref_for(data + b"x"))
    assert stored_files(store) == [rel_path(ref)]  # the aa/bb/<hex> fan-out layout


async def test_the_same_bytes_are_stored_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"x" * 10_000
    ref = await store.put(data)
    before = stored_files(store)
    inode = (
        os.stat(store.root / rel_path(ref)).st_ino if isinstance(store, LocalBlobStore) else None
    )
    if isinstance(store, FsspecBlobStore):

        def no_write(*args: object, **kwargs: object) -> None:
            raise AssertionError("an already stored blob was written again")

        monkeypatch.setattr(store.fs, "pipe_file", no_write)

    assert [await store.put(data) for _ in range(3)] == [ref] * 3

    assert stored_files(store) == before == [rel_path(ref)]
    assert await all_refs(store) == {ref}
    if inode is not None:
        assert isinstance(store, LocalBlobStore)
        assert os.stat(store.root / rel_path(ref)).st_ino == inode  # not replaced


async def test_distinct_blobs_are_all_listed(store: Store) -> None:
    refs = {await store.put(f"blob {i}".encode()) for i in range(20)}

    assert len(refs) == 20
    assert await all_refs(store) == refs


async def test_iter_refs_skips_files_that_are_not_blobs(store: Store) -> None:
    ref = await store.put(b"real")
    hexdigest = ref_for(b"other").removeprefix("sha256:")
    write_raw(store, f"{rel_path(ref).rsplit('/', 1)[0]}/.tmp-0123abcd", b"half a blob")
    write_raw(store, "README", b"not a blob")
    write_raw(store, f"{hexdigest[:2]}/{hexdigest[2:4]}/notes.txt", b"not a blob")
    write_raw(store, f"00/00/{hexdigest}", b"a blob in the wrong directory")

    assert await all_refs(store) == {ref}


async def test_an_empty_or_absent_store_lists_nothing(store: Store) -> None:
    assert await all_refs(store) == set()
    assert await collect_garbage(store, keep=set()) == 0


async def test_delete_is_idempotent(store: Store) -> None:
    ref = await store.put(b"bye")

    await store.delete(ref)
    await store.delete(ref)

    assert not await store.exists(ref)
    assert await all_refs(store) == set()
    with pytest.raises(BlobNotFoundError):
        await store.get(ref)


async def test_a_missing_blob_is_a_clear_error_naming_the_ref_and_the_store(store: Store) -> None:
    ref = ref_for(b"never stored")

    with pytest.raises(BlobNotFoundError) as info:
        await store.get(ref)

    assert isinstance(info.value, StoreError)
    assert info.value.code == "blob_not_found"
    assert (info.value.ref, info.value.location) == (ref, store.location)
    message = str(info.value)
    assert ref in message
    assert store.location in message
    assert "not in the blob store" in message


async def test_a_corrupted_blob_is_detected_on_read(store: Store) -> None:
    data = b"the original content"
    ref = await store.put(data)
    write_raw(store, rel_path(ref), b"THE original content")  # same size, other bytes

    with pytest.raises(BlobCorruptedError) as info:
        await store.get(ref)

    message = str(info.value)
    assert ref in message
    assert store.location in message
    assert ref_for(b"THE original content") in message
    assert info.value.code == "blob_corrupted"


async def test_a_truncated_blob_is_rewritten_by_the_next_put(store: Store) -> None:
    data = b"0123456789" * 100
    ref = await store.put(data)
    write_raw(store, rel_path(ref), data[:10])  # as a torn, non-atomic write would leave it
    with pytest.raises(BlobCorruptedError):
        await store.get(ref)

    assert await store.put(data) == ref

    assert await store.get(ref) == data


@pytest.mark.parametrize(
    "bad", ["", "sha256:", "sha256:../../../etc/passwd", "md5:" + "0" * 64, "sha256:" + "A" * 64]
)
async def test_a_malformed_ref_is_a_user_error(store: Store, bad: str) -> None:
    for call in (store.get, store.exists, store.delete):
        with pytest.raises(UserError, match="is not a blob reference"):
            await call(bad)


def test_concurrent_puts_of_one_blob_store_it_once_and_readers_never_see_a_partial_blob(
    store: Store,
) -> None:
    # Separate threads, each with its own event loop, so the writes really overlap
    # whatever the store does with its own threads. A few rounds make a torn write show.
    for _ in range(4):
        data = os.urandom(4 << 20)
        ref = ref_for(data)
        writing = threading.Event()
        writing.set()
        seen: list[int] = []

        def reader(
            ref: str = ref, writing: threading.Event = writing, seen: list[int] = seen
        ) -> None:
            while writing.is_set():
                try:
                    seen.append(len(anyio.run(store.get, ref)))
                except BlobNotFoundError:
                    continue

        def writer(_: int, data: bytes = data) -> str:
            return anyio.run(store.put, data)

        with ThreadPoolExecutor(max_workers=10) as pool:
            readers = [pool.submit(reader) for _ in range(2)]
            refs = list(pool.map(writer, range(8)))
            writing.clear()
            for r in readers:
                r.result()  # re-raises a BlobCorruptedError seen by a reader

        assert refs == [ref] * 8
        assert set(seen) <= {len(data)}
        assert stored_files(store) == [rel_path(ref)]  # one blob, no temp files left behind
        assert anyio.run(store.get, ref) == data
        anyio.run(store.delete, ref)


async def test_concurrent_puts_from_tasks(store: Store) -> None:
    blobs = [os.urandom(256 << 10) for _ in range(4)]
    results: list[str] = []

    async def put(data: bytes) -> None:
        results.append(await store.put(data))

    async with anyio.create_task_group() as tg:
        for data in blobs * 5:
            tg.start_soon(put, data)

    assert sorted(results) == sorted([ref_for(b) for b in blobs] * 5)
    assert len(stored_files(store)) == 4
    for data in blobs:
        assert await store.get(ref_for(data)) == data


async def test_large_blob_io_does_not_block_the_event_loop(tmp_path: Path) -> None:
    class SlowDisk(LocalBlobStore):
        def _read(self, hexdigest: str) -> bytes | None:
            time.sleep(0.3)
            return super()._read(hexdigest)

    store = SlowDisk(tmp_path)
    ref = await store.put(b"big")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        assert await store.get(ref) == b"big"
        tg.cancel_scope.cancel()

    assert ticks >= 10


# --- open_blob_store ------------------------------------------------------------------


def test_open_blob_store_picks_the_store_by_scheme(tmp_path: Path) -> None:
    for local in (tmp_path, str(tmp_path), tmp_path.as_uri(), f"file://localhost{tmp_path}"):
        store = open_blob_store(local)
        assert isinstance(store, LocalBlobStore)
        assert store.root == tmp_path

    mem = open_blob_store("memory://taskloom-open-test")
    assert isinstance(mem, FsspecBlobStore)
    assert mem.fs.protocol == "memory" or "memory" in mem.fs.protocol
    assert mem.location == "memory://taskloom-open-test"


def test_open_blob_store_rejects_what_it_cannot_honour(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="three slashes"):
        open_blob_store("file://otherhost/blobs")
    with pytest.raises(UserError, match=r"storage options \['key'\].*fsspec URLs"):
        open_blob_store(tmp_path, key="secret")


# --- references: externalize / internalize --------------------------------------------


async def test_a_small_value_stays_inline(store: Store) -> None:
    text = json.dumps({"answer": 42})

    out = await externalize(text, store=store, threshold=len(text), hard_limit=1000)

    assert out == text
    assert await internalize(out, store=store) == text
    assert await all_refs(store) == set()


async def test_a_large_value_becomes_a_reference_and_comes_back(store: Store) -> None:
    text = json.dumps({"essay": "é" * 5000, "n": [1, 2, 3]}, ensure_ascii=False)
    size = len(text.encode())  # bytes, not characters

    out = await externalize(text, store=store, threshold=1000, hard_limit=1_000_000)

    ref = ref_for(text.encode())
    assert json.loads(out) == {BLOB_KEY: ref, "size": size}
    assert len(out) < 100
    assert is_ref(json.loads(out))
    assert await all_refs(store) == {ref}
    assert await internalize(out, store=store) == text


async def test_a_value_that_looks_like_a_reference_round_trips_exactly(store: Store) -> None:
    # Stored as a blob itself, or internalize would swap it for another value.
    lookalike = json.dumps({BLOB_KEY: await store.put(b'"decoy"'), "size": 7})

    out = await externalize(lookalike, store=store, threshold=10_000, hard_limit=10_000)

    assert out != lookalike
    assert await internalize(out, store=store) == lookalike


@pytest.mark.parametrize(
    "text",
    [
        "42",
        '"$blob"',
        "not json {",
        '{"$blob": "sha256:abc", "size": 3}',
        json.dumps({BLOB_KEY: ref_for(b"x"), "size": 1, "extra": True}),
        json.dumps({"x": [{BLOB_KEY: ref_for(b"x"), "size": 1}]}),
        " " * 300 + json.dumps({BLOB_KEY: ref_for(b"x"), "size": 1}),
    ],
)
async def test_internalize_leaves_anything_but_a_reference_alone(store: Store, text: str) -> None:
    assert await internalize(text, store=store) == text


async def test_internalize_of_a_collected_blob_names_the_ref(store: Store) -> None:
    out = await externalize("[" + "1," * 100 + "1]", store=store, threshold=10, hard_limit=10_000)
    await collect_garbage(store, keep=set())

    with pytest.raises(BlobNotFoundError, match=json.loads(out)[BLOB_KEY]):
        await internalize(out, store=store)


async def test_a_payload_over_the_hard_limit_says_size_limit_and_setting(store: Store) -> None:
    text = json.dumps("x" * 2000)  # 2002 bytes

    assert await externalize(text, store=store, threshold=10, hard_limit=2002) != text
    with pytest.raises(PayloadTooLargeError) as info:
        await externalize(
            text, store=store, threshold=10, hard_limit=2001, what="the result of activity 'big'"
        )

    error = info.value
    assert isinstance(error, UserError)
    assert error.code == "payload_too_large"
    assert (error.size, error.limit) == (2002, 2001)
    message = str(error)
    assert message.startswith("the result of activity 'big' is 2002 bytes")
    assert "hard limit of 2001 bytes" in message
    assert "TASKLOOM_PAYLOAD_HARD_LIMIT" in message
    assert await all_refs(store) == {ref_for(text.encode())}  # only the first, allowed one


async def test_store_all_stores_each_value_once_and_gives_their_references(
    store: Store,
) -> None:
    texts = [json.dumps("system"), json.dumps("a user turn"), json.dumps("system")]

    refs = await store_all(texts, store=store, hard_limit=1000, what="a message")

    expected = [{BLOB_KEY: ref_for(t.encode()), "size": len(t.encode())} for t in texts]
    assert refs == expected
    assert refs[0] == refs[2]  # the same content, the same blob
    assert await all_refs(store) == {r[BLOB_KEY] for r in expected}
    for text, ref in zip(texts, refs, strict=True):
        assert await internalize(json.dumps(ref), store=store) == text


async def test_store_all_refuses_an_oversized_value_before_storing_any(store: Store) -> None:
    texts = [json.dumps("fine"), json.dumps("x" * 2000)]

    with pytest.raises(PayloadTooLargeError) as info:
        await store_all(texts, store=store, hard_limit=100, what="a message of agent 'w'")

    assert str(info.value).startswith("a message of agent 'w' is 2002 bytes")
    assert await all_refs(store) == set()


# --- is_ref / refs_in / collect_garbage -------------------------------------------------


def test_is_ref_accepts_only_the_exact_shape() -> None:
    ref = ref_for(b"x")
    assert is_ref({BLOB_KEY: ref, "size": 0})
    for value in [
        {BLOB_KEY: ref},
        {BLOB_KEY: ref, "size": 1, "more": 2},
        {BLOB_KEY: ref, "size": -1},
        {BLOB_KEY: ref, "size": True},
        {BLOB_KEY: ref, "size": 1.0},
        {BLOB_KEY: ref.upper(), "size": 1},
        {BLOB_KEY: "sha256:123", "size": 1},
        json.dumps({BLOB_KEY: ref, "size": 1}),  # the text, not the decoded value
        [ref],
        None,
    ]:
        assert not is_ref(value), value


def test_refs_in_finds_references_at_any_depth() -> None:
    a, b, c = (ref_for(x) for x in (b"a", b"b", b"c"))
    value = {
        "result": {BLOB_KEY: a, "size": 1},
        "messages": [
            {"role": "user", "content": {BLOB_KEY: b, "size": 1}},
            {"role": "assistant", "content": [[{"deep": {BLOB_KEY: c, "size": 1}}]]},
            {"role": "user", "content": {BLOB_KEY: b, "size": 1}},
        ],
        "not_refs": [{BLOB_KEY: "sha256:nope", "size": 1}, json.dumps({BLOB_KEY: a, "size": 1})],
        "n": 3,
    }

    assert refs_in(value) == {a, b, c}
    assert refs_in({BLOB_KEY: a, "size": 1}) == {a}
    assert refs_in([1, "two", None, {"x": []}]) == set()


async def test_collect_garbage_keeps_only_referenced_blobs(store: Store) -> None:
    kept = [
        await externalize(json.dumps(["kept", i] * 50), store=store, threshold=10, hard_limit=10**6)
        for i in range(3)
    ]
    dropped = [await store.put(f"dropped {i}".encode()) for i in range(4)]
    log = {"events": [{"result": json.loads(text)} for text in kept]}
    keep = refs_in(log) | {ref_for(b"long gone")}

    assert await collect_garbage(store, keep=keep) == 4

    assert await all_refs(store) == refs_in(log)
    for text in kept:
        assert json.loads(await internalize(text, store=store))[0] == "kept"
    for ref in dropped:
        assert not await store.exists(ref)
    assert await collect_garbage(store, keep=keep) == 0
