"""What a user's input holds, as a short string that changes when its content changes, not its URI.

Pipeline caches (kfp.local's and Kubeflow's) key a step by its inputs. A URI string stays the same when new
data or weights are written to it, so the configure step puts each input's fingerprint into the job JSON
that every step receives: a changed input changes the cache key of every step that could read it.
- local file: sha256 of its bytes;
- local folder: a rankadaptor artifact's manifest hash, else the names, sizes and mtimes of its files
  (hashing a base model's gigabytes of weights at every run would cost more than it guards);
- s3:// object: its ETag (and VersionId on a versioned bucket); s3:// folder: the keys and ETags it lists;
- hub id: the commit of the snapshot in the local hub cache (an id not cached is keyed by its name alone:
  there is no network at run time to ask the hub what `main` is now).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rankadaptor.errors import UserError
from rankadaptor.infra import storage


def fingerprint(uri: str) -> str:
    """`<kind>:<digest>` of the content at uri (see the module docstring); a missing input is refused."""
    if storage.is_s3(uri):
        return _s3(uri)
    path = Path(uri).expanduser()
    if path.is_file():
        return f"sha256:{storage.sha256_file(path)}"
    if path.is_dir():
        if (path / storage.MANIFEST).is_file():
            return f"manifest:{storage.checksum(path)}"
        return f"files:{_digest(_file_stats(path))}"
    if uri.count("/") == 1 and not uri.startswith((".", "/", "~")):
        return _hub(uri)
    raise UserError(f"input {uri!r} not found: expected a local file or folder, an s3:// URI or a hub id")


def fingerprints(uris: dict[str, str]) -> dict[str, str]:
    """name -> fingerprint of each input."""
    return {name: fingerprint(uri) for name, uri in uris.items()}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _file_stats(directory: Path) -> list[list]:
    return [[p.relative_to(directory).as_posix(), p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(directory.rglob("*")) if p.is_file()]


def _s3(uri: str) -> str:
    from botocore.exceptions import ClientError

    bucket, key = storage.split_s3(uri)
    client = storage.s3_client()
    with storage.s3_errors(uri):
        try:  # an object, else a folder (a bucket's root is only a folder)
            head = client.head_object(Bucket=bucket, Key=key or "/")
            etag, version = head["ETag"].strip('"'), head.get("VersionId")
            return f"etag:{etag}@{version}" if version else f"etag:{etag}"
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        listing = storage.s3_listing(client, uri)
    if not listing:
        raise UserError(f"input {uri!r} not found on S3: neither an object nor a folder of objects")
    return f"listing:{_digest(listing)}"


def _hub(repo_id: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):  # .../snapshots/<commit>/config.json
        return f"hub:{repo_id}@{Path(cached).parent.name}"
    return f"hub:{repo_id}"
