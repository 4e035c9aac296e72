"""Content-addressed storage for large payloads, so the run log stays small.

A value whose JSON is larger than a threshold is stored once, under the SHA-256 of its
bytes, and the log holds a small reference in its place::

    {"$blob": "sha256:9f86d081884c7d65...", "size": 1048576}

``size`` is the length in bytes of the value's UTF-8 JSON. Both stores use one layout,
``<root>/aa/bb/<hex>``, where ``aa`` and ``bb`` are the first two byte pairs of the hex
digest (so no directory holds more than a few hundred entries per million blobs):

- :class:`LocalBlobStore`: a local directory, the default. Writes are atomic (temp file
  in the same directory, fsync, rename), so concurrent writers of one blob and readers
  never see a partial file.
- :class:`FsspecBlobStore`: any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
  ``memory://``), so workers on many machines can share one store.

Example::

    store = open_blob_store("s3://my-bucket/taskloom-blobs")
    text = await externalize(value_json, store=store, threshold=256_000, hard_limit=limit)
    assert await internalize(text, store=store) == value_json
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from anyio import to_thread

from taskloom.engine import serde
from taskloom.errors import BlobCorruptedError, BlobNotFoundError, PayloadTooLargeError, UserError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "BLOB_KEY",
    "BlobStore",
    "FsspecBlobStore",
    "LocalBlobStore",
    "collect_garbage",
    "externalize",
    "fits_its_ref",
    "internalize",
    "is_ref",
    "open_blob_store",
    "ref_for",
    "refs_in",
    "store_all",
    "within_limit",
]

BLOB_KEY = "$blob"
"""The key that marks a JSON object as a blob reference."""

_PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")
_SHARD = re.compile(r"[0-9a-f]{2}")
_TMP_PREFIX = ".tmp-"
# Blobs up to this many bytes in all are hashed and looked up on the event loop.
_INLINE_CHECK_BYTES = 64 << 10
# A reference's JSON is about 100 bytes, so longer text is never parsed to check.
_MAX_REF_TEXT = 256
# The length of a reference's JSON but for the digits of its size.
_REF_TEXT_BYTES = len(serde.dumps({BLOB_KEY: _PREFIX + "0" * 64, "size": 0})) - 1
# Stores where a single PUT makes the whole object visible at once, or not at all, so a
# blob can be written in place; elsewhere it is written aside and renamed.
_ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def ref_for(data: bytes) -> str:
    """The reference :meth:`BlobStore.put` returns for ``data``: ``sha256:<hex>``."""
    return _PREFIX + hashlib.sha256(data).hexdigest()


def _is_valid_ref(ref: object) -> bool:
    return isinstance(ref, str) and ref.startswith(_PREFIX) and bool(_HEX.fullmatch(ref[7:]))


def _hex_of(ref: str) -> str:
    if not _is_valid_ref(ref):
        raise UserError(
            f"{ref!r} is not a blob reference: expected 'sha256:' and 64 lowercase hex "
            f"digits, as returned by BlobStore.put()"
        )
    return ref[len(_PREFIX) :]


class BlobStore(abc.ABC):
    """Content-addressed storage of bytes: the reference is the SHA-256 of the content.

    Implementations must make :meth:`put` idempotent and safe to call concurrently
    (from several processes) with the same bytes, and :meth:`get` must verify the hash.
    ``location`` names the store in error messages.
    """

    location: str

    @abc.abstractmethod
    async def put(self, data: bytes) -> str:
        """Store ``data`` (once, however often it is put) and return its reference."""

    async def put_many(self, items: Sequence[bytes]) -> list[str]:
        """:meth:`put` each of ``items``; their references, in order. Stores whose I/O
        blocks override it to do all of them in one trip to a worker thread."""
        return list(await asyncio.gather(*(self.put(data) for data in items)))

    @abc.abstractmethod
    async def get(self, ref: str) -> bytes:
        """The bytes stored under ``ref``, checked against the hash.

        Raises :class:`BlobNotFoundError` if there is no such blob and
        :class:`BlobCorruptedError` if the stored bytes do not match ``ref``.
        """

    @abc.abstractmethod
    async def exists(self, ref: str) -> bool:
        """Whether a blob is stored under ``ref``."""

    @abc.abstractmethod
    async def delete(self, ref: str) -> None:
        """Remove the blob stored under ``ref``; nothing happens if there is none."""

    @abc.abstractmethod
    def iter_refs(self) -> AsyncIterator[str]:
        """Every stored reference, in no particular order (for garbage collection)."""


class _ShardedStore(BlobStore):
    """The ``aa/bb/<hex>`` layout over blocking primitives run in worker threads."""

    async def put(self, data: bytes) -> str:
        [ref] = await self.put_many([data])
        return ref

    async def put_many(self, items: Sequence[bytes]) -> list[str]:
        # One thread hop for all: each hop costs more CPU than checking a small blob.
        return await to_thread.run_sync(lambda: [self._hash_and_write(d) for d in items])

    async def get(self, ref: str) -> bytes:
        hexdigest = _hex_of(ref)
        return await to_thread.run_sync(self._read_verified, ref, hexdigest)

    async def exists(self, ref: str) -> bool:
        return await to_thread.run_sync(self._exists, _hex_of(ref))

    async def delete(self, ref: str) -> None:
        await to_thread.run_sync(self._delete, _hex_of(ref))

    async def iter_refs(self) -> AsyncIterator[str]:
        # One thread hop per top-level shard keeps memory flat for millions of blobs.
        for shard in await to_thread.run_sync(self._shards):
            for hexdigest in await to_thread.run_sync(self._list_shard, shard):
                yield _PREFIX + hexdigest

    def _hash_and_write(self, data: bytes) -> str:
        ref = ref_for(data)
        self._write(ref[len(_PREFIX) :], data)
        return ref

    def _read_verified(self, ref: str, hexdigest: str) -> bytes:
        data = self._read(hexdigest)
        if data is None:
            raise BlobNotFoundError(
                f"blob {ref} is not in the blob store at {self.location}: it was deleted "
                f"(garbage collected with its run?) or written to a different store; check "
                f"that every worker and client uses the same blob store",
                ref=ref,
                location=self.location,
            )
        actual = ref_for(data)
        if actual != ref:
            raise BlobCorruptedError(
                f"blob {ref} in the blob store at {self.location} is corrupted: its "
                f"{len(data)} bytes hash to {actual}. Restore it from a backup, or delete "
                f"it so that storing the same value again rewrites it",
                ref=ref,
                location=self.location,
            )
        return data

    @staticmethod
    def _key(hexdigest: str) -> tuple[str, str, str]:
        return hexdigest[:2], hexdigest[2:4], hexdigest

    @staticmethod
    def _belongs(shard: str, sub: str, name: str) -> bool:
        return bool(_HEX.fullmatch(name)) and name.startswith(shard + sub)

    @abc.abstractmethod
    def _write(self, hexdigest: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _read(self, hexdigest: str) -> bytes | None: ...

    @abc.abstractmethod
    def _exists(self, hexdigest: str) -> bool: ...

    @abc.abstractmethod
    def _delete(self, hexdigest: str) -> None: ...

    @abc.abstractmethod
    def _shards(self) -> list[str]: ...

    @abc.abstractmethod
    def _list_shard(self, shard: str) -> list[str]: ...


class LocalBlobStore(_ShardedStore):
    """Blobs as files under ``root/aa/bb/<hex>`` on a local disk.

    Each blob is written to a temp file in its final directory, fsynced, and renamed into
    place, so a crash or a concurrent writer never leaves a partial blob behind. File I/O
    runs in worker threads, so large blobs do not block the event loop.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({self.location!r})"

    def _path(self, hexdigest: str) -> Path:
        return self.root.joinpath(*self._key(hexdigest))

    async def put_many(self, items: Sequence[bytes]) -> list[str]:
        """Small blobs are hashed and looked up on the event loop (a ``stat`` costs far
        less than a trip to a worker thread); only those not stored yet go to a thread,
        in one trip. (Callers do not share a trip: their fsyncs overlap, which the disk
        commits together, where one thread's would wait for each other.)"""
        if sum(map(len, items)) > _INLINE_CHECK_BYTES:
            return await super().put_many(items)
        refs = [ref_for(data) for data in items]
        missing = {
            ref[len(_PREFIX) :]: data
            for ref, data in zip(refs, items, strict=True)
            if not self._stored(ref[len(_PREFIX) :], len(data))
        }
        if missing:
            await to_thread.run_sync(self._write_all, missing)
        return refs

    def _stored(self, hexdigest: str, size: int) -> bool:
        """Whether the blob is in place (content-addressed: the same name holds the same
        bytes; a file of another size is a torn write, written again)."""
        # os.path and a str: pathlib costs several times the stat itself
        path = os.path.join(self.location, hexdigest[:2], hexdigest[2:4], hexdigest)
        try:
            return os.stat(path).st_size == size
        except FileNotFoundError:
            return False

    def _write(self, hexdigest: str, data: bytes) -> None:
        if self._stored(hexdigest, len(data)):
            return
        _fsync_dir(self._write_aside(hexdigest, data))

    def _write_all(self, blobs: dict[str, bytes]) -> None:
        """Write every blob of ``blobs`` not stored yet; each directory they went to is
        fsynced once, after all of them, so that a power loss loses none."""
        written = {
            self._write_aside(hexdigest, data)
            for hexdigest, data in blobs.items()
            if not self._stored(hexdigest, len(data))
        }
        for directory in written:
            _fsync_dir(directory)

    def _write_aside(self, hexdigest: str, data: bytes) -> Path:
        """Write the blob to a temp file, fsync it and rename it into place; returns the
        directory, which the caller fsyncs (so the new name survives a power loss)."""
        path = self._path(hexdigest)
        self._make_dirs(path.parent)
        tmp = path.parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # Atomic: a concurrent writer of the same blob replaces identical bytes.
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path.parent

    def _make_dirs(self, directory: Path) -> None:
        if directory.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (directory.parent, directory):
            if not d.is_dir():
                d.mkdir(exist_ok=True)
                _fsync_dir(d.parent)  # so the new directory survives a power loss

    def _read(self, hexdigest: str) -> bytes | None:
        try:
            return self._path(hexdigest).read_bytes()
        except FileNotFoundError:
            return None

    def _exists(self, hexdigest: str) -> bool:
        return self._path(hexdigest).is_file()

    def _delete(self, hexdigest: str) -> None:
        self._path(hexdigest).unlink(missing_ok=True)

    def _shards(self) -> list[str]:
        return sorted(_subdirs(self.root))

    def _list_shard(self, shard: str) -> list[str]:
        found = []
        for sub in _subdirs(self.root / shard):
            with contextlib.suppress(FileNotFoundError), os.scandir(self.root / shard / sub) as it:
                found += [e.name for e in it if self._belongs(shard, sub, e.name) and e.is_file()]
        return found


def _subdirs(directory: Path) -> list[str]:
    """Names of the two-hex-digit fan-out directories in ``directory`` (none if absent)."""
    try:
        with os.scandir(directory) as it:
            return [e.name for e in it if _SHARD.fullmatch(e.name) and e.is_dir()]
    except FileNotFoundError:
        return []


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory to fsync it
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FsspecBlobStore(_ShardedStore):
    """Blobs under any fsspec URL, in the same ``aa/bb/<hex>`` layout.

    ``storage_options`` go to the filesystem (credentials, endpoint, ...)::

        FsspecBlobStore("s3://bucket/taskloom", endpoint_url="http://minio:9000")

    On object stores (S3, GCS, Azure, memory) a blob is written in one PUT, which is
    atomic there; on other filesystems it is written to a temp name and moved into place.
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        from fsspec.core import url_to_fs  # imported here: local stores do not need it

        fs, root = url_to_fs(url, **storage_options)
        self.fs: AbstractFileSystem = fs
        self.root: str = root.rstrip("/")
        self.location = _redact(url)
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        self._atomic_put = not _ATOMIC_PUT_PROTOCOLS.isdisjoint(protocols)

    def __repr__(self) -> str:
        return f"FsspecBlobStore({self.location!r})"

    def _path(self, hexdigest: str) -> str:
        return "/".join((self.root, *self._key(hexdigest)))

    def _write(self, hexdigest: str, data: bytes) -> None:
        path = self._path(hexdigest)
        self.fs.invalidate_cache(path)  # another process may have written or deleted it
        with contextlib.suppress(FileNotFoundError):
            if self.fs.size(path) == len(data):
                return  # content-addressed: the same name holds the same bytes
        if self._atomic_put:
            self.fs.pipe_file(path, data)
            return
        parent = path.rsplit("/", 1)[0]
        tmp = f"{parent}/{_TMP_PREFIX}{secrets.token_hex(8)}"
        self.fs.makedirs(parent, exist_ok=True)
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(tmp)
            raise

    def _read(self, hexdigest: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(self._path(hexdigest))
        except FileNotFoundError:
            return None
        return data

    def _exists(self, hexdigest: str) -> bool:
        path = self._path(hexdigest)
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def _delete(self, hexdigest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(hexdigest))

    def _shards(self) -> list[str]:
        self.fs.invalidate_cache(self.root)
        try:
            entries: list[str] = self.fs.ls(self.root or "/", detail=False)
        except FileNotFoundError:
            return []
        names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries}
        return sorted(n for n in names if _SHARD.fullmatch(n))

    def _list_shard(self, shard: str) -> list[str]:
        found = []
        for path in self.fs.find(f"{self.root}/{shard}"):
            parts = str(path).rstrip("/").split("/")[-3:]
            if len(parts) == 3 and parts[0] == shard and self._belongs(shard, *parts[1:]):
                found.append(parts[2])
        return found


def _redact(url: str) -> str:
    """``url`` with any password replaced, for error messages."""
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()
    return url


def open_blob_store(url_or_path: str | Path, **storage_options: Any) -> BlobStore:
    """The blob store at a path or URL.

    A plain path or a ``file://`` URL gives a :class:`LocalBlobStore`; any other scheme
    (``s3://``, ``gs://``, ``memory://``, ...) gives a :class:`FsspecBlobStore`, which
    receives ``storage_options``.
    """
    if isinstance(url_or_path, Path) or "://" not in url_or_path:
        _no_options(storage_options, url_or_path)
        return LocalBlobStore(Path(url_or_path))
    if url_or_path.split("://", 1)[0].lower() == "file":
        _no_options(storage_options, url_or_path)
        return LocalBlobStore(_file_url_path(url_or_path))
    return FsspecBlobStore(url_or_path, **storage_options)


def _no_options(storage_options: dict[str, Any], where: str | Path) -> None:
    if storage_options:
        raise UserError(
            f"storage options {sorted(storage_options)} were given for the local blob store "
            f"at {where}; they apply only to fsspec URLs such as s3://bucket/prefix"
        )


def _file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UserError(
            f"{url!r} names a file on host {parts.netloc!r}; a file URL must name a local "
            f"path, with three slashes: file:///var/lib/taskloom/blobs"
        )
    from urllib.request import url2pathname  # http.client and email with it: only here

    return Path(url2pathname(unquote(parts.path)))


async def externalize(
    value_json: str,
    *,
    store: BlobStore,
    threshold: int,
    hard_limit: int,
    what: str = "a payload",
) -> str:
    """``value_json`` itself if it is at most ``threshold`` bytes, else the JSON of a
    reference to it, stored in ``store``.

    ``what`` names the value in the error raised when it is over ``hard_limit`` bytes.
    A small value that happens to look like a reference is stored too, so that
    :func:`internalize` always gives back exactly ``value_json``.
    """
    data = within_limit(value_json, hard_limit, what)
    if len(data) <= threshold and _parse_ref_text(value_json) is None:
        return value_json
    ref = await store.put(data)
    return serde.dumps({BLOB_KEY: ref, "size": len(data)})


async def store_all(
    values_json: Sequence[str], *, store: BlobStore, hard_limit: int, what: str = "a payload"
) -> list[dict[str, Any]]:
    """Store each of ``values_json`` whatever its size, in one :meth:`BlobStore.put_many`,
    and return their references (what :func:`externalize` makes of a large value)."""
    items = [within_limit(text, hard_limit, what) for text in values_json]
    refs = await store.put_many(items)
    return [{BLOB_KEY: ref, "size": len(data)} for ref, data in zip(refs, items, strict=True)]


def fits_its_ref(value_json: str) -> bool:
    """Whether ``value_json`` is no longer than the JSON of its reference (about 90
    bytes), so storing it would not make the log any smaller."""
    if len(value_json) > _MAX_REF_TEXT:
        return False
    size = len(value_json.encode())
    return size <= _REF_TEXT_BYTES + len(str(size))


def within_limit(value_json: str, hard_limit: int, what: str) -> bytes:
    """The UTF-8 bytes of ``value_json``; PayloadTooLargeError over ``hard_limit``."""
    data = value_json.encode()
    if len(data) > hard_limit:
        raise PayloadTooLargeError(
            f"{what} is {len(data)} bytes, over the hard limit of {hard_limit} bytes. Pass "
            f"large data by reference (a file path or URL) instead of by value, or raise the "
            f"limit with TASKLOOM_PAYLOAD_HARD_LIMIT",
            size=len(data),
            limit=hard_limit,
        )
    return data


async def internalize(text: str, *, store: BlobStore) -> str:
    """The original JSON if ``text`` is a reference made by :func:`externalize`, else
    ``text`` unchanged."""
    ref = _parse_ref_text(text)
    if ref is None:
        return text
    return (await store.get(ref)).decode()


def _parse_ref_text(text: str) -> str | None:
    """The reference in ``text`` if it is the JSON of a blob reference."""
    if len(text) > _MAX_REF_TEXT or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return str(value[BLOB_KEY]) if is_ref(value) else None


def is_ref(value: object) -> bool:
    """Whether a decoded JSON value is a blob reference ``{"$blob": ..., "size": N}``."""
    if not isinstance(value, dict) or value.keys() != {BLOB_KEY, "size"}:
        return False
    size = value["size"]
    return _is_valid_ref(value[BLOB_KEY]) and type(size) is int and size >= 0


def refs_in(value: object) -> set[str]:
    """Every blob reference inside a decoded JSON value, at any depth.

    >>> sorted(refs_in({"a": [{"$blob": "sha256:" + "0" * 64, "size": 3}], "b": 1}))
    ['sha256:0000000000000000000000000000000000000000000000000000000000000000']
    """
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if is_ref(item):
                found.add(item[BLOB_KEY])
            else:
                stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


async def collect_garbage(store: BlobStore, *, keep: AbstractSet[str]) -> int:
    """Delete every blob in ``store`` whose reference is not in ``keep``; return how
    many were deleted.

    ``keep`` must include blobs that running workflows may have written but not yet
    recorded in the log; a blob deleted too early makes a later read raise
    :class:`BlobNotFoundError`.
    """
    doomed = [ref async for ref in store.iter_refs() if ref not in keep]
    for ref in doomed:
        await store.delete(ref)
    return len(doomed)
