"""Artifact locations are URIs: a local path or s3://bucket/key. Every read and write goes through here.

An artifact is a directory. It is written to a temporary place and only becomes visible when complete:
locally by an atomic rename, on S3 by uploading `manifest.json` (the sha256 of every file) last.
Readers require the manifest and verify the checksums, so a later stage never reads a partial artifact.
S3 access uses boto3's own configuration (AWS_* variables, AWS_ENDPOINT_URL for a non-AWS server) with
retries and backoff; credentials never pass through this module's arguments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from rankadaptor.errors import ServiceError, UserError

MANIFEST = "manifest.json"


S3_SCHEMES = ("s3://", "minio://")  # Kubeflow's artifact store URIs name MinIO/SeaweedFS buckets as minio://


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_SCHEMES)


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = str(uri).split("://", 1)[1].partition("/")
    if not bucket:
        raise UserError(f"S3 URI {uri!r} has no bucket: expected s3://bucket/key")
    return bucket, key.strip("/")


def join(uri: str, *parts: str) -> str:
    if is_s3(uri):
        return "/".join([str(uri).rstrip("/"), *parts])
    return str(Path(uri, *parts))


def s3_client():
    import boto3
    from botocore.config import Config

    retries = int(os.environ.get("RANKADAPTOR_S3_RETRIES", "5"))
    timeout = float(os.environ.get("RANKADAPTOR_S3_TIMEOUT", "60"))  # seconds per connect and per read
    # A fresh session reads the credentials in the environment now (the default session caches them).
    return boto3.session.Session().client("s3", config=Config(retries={"max_attempts": retries, "mode": "standard"},
                                                              connect_timeout=timeout, read_timeout=timeout))


def s3_errors(uri: str):
    """Translate boto errors into messages that name the URI, never the credentials: bad input (a missing
    bucket or key, refused credentials) is a UserError, an outage after boto's retries a ServiceError."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    @contextlib.contextmanager
    def translate():
        try:
            yield
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            # A HEAD request has no body, so S3 answers a missing bucket or key with a bare 404.
            if code == "NoSuchBucket" or (code in ("404", "NotFound") and e.operation_name == "HeadBucket"):
                raise UserError(f"S3 bucket of {uri!r} does not exist") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise UserError(f"nothing at {uri!r} on S3 ({code}): the file is missing, or the artifact was "
                                f"never completed (a directory artifact exists once its {MANIFEST} is uploaded)") from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                raise UserError(f"S3 refused access to {uri!r} ({code}): check the AWS_* credentials") from None
            if status >= 500 or code in ("InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"):
                raise ServiceError(f"S3 request for {uri!r} failed after retries (S3 is failing): {code or status}") from e
            raise UserError(f"S3 request for {uri!r} failed: {code or e}") from None
        except (ConnectionError, HTTPClientError) as e:
            raise ServiceError(f"S3 request for {uri!r} failed after retries (S3 is unreachable): {e}") from e
        except S3UploadFailedError as e:  # s3transfer wraps the cause in its message
            if any(c in str(e) for c in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket")):
                raise UserError(f"S3 refused the upload to {uri!r}: {e}") from None
            raise ServiceError(f"S3 request for {uri!r} failed after retries (the upload): {e}") from e
        except BotoCoreError as e:
            raise UserError(f"S3 request for {uri!r} failed: {e}") from None

    return translate()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(directory: Path) -> dict[str, str]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {p.relative_to(directory).as_posix(): sha256_file(p) for p in files}
    (directory / MANIFEST).write_text(json.dumps({"files": manifest}, indent=1, sort_keys=True))
    return manifest


def verify(directory: Path, uri: str | None = None) -> None:
    """Refuse a directory artifact that is incomplete or whose files changed since it was written."""
    manifest_path = directory / MANIFEST
    where = uri or str(directory)
    if not manifest_path.exists():
        raise UserError(f"artifact {where!r} is incomplete or not written by rankadaptor: no {MANIFEST}")
    files = json.loads(manifest_path.read_text())["files"]
    for name, digest in files.items():
        path = directory / name
        if not path.exists():
            raise UserError(f"artifact {where!r} is missing {name!r} listed in its manifest")
        if sha256_file(path) != digest:
            raise UserError(f"artifact {where!r}: checksum of {name!r} does not match its manifest (corrupt)")


def checksum(directory: Path, skip: tuple[str, ...] = ()) -> str:
    """One sha256 for a whole directory artifact (the hash of its manifest), optionally leaving out files
    that describe the run rather than the content (timings in a report)."""
    files = json.loads((directory / MANIFEST).read_text())["files"]
    kept = {name: digest for name, digest in files.items() if name not in skip}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def exists(uri: str) -> bool:
    """Whether a complete directory artifact is at uri."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        from botocore.exceptions import ClientError

        with s3_errors(uri):  # an outage (after retries) is an error, not a missing artifact
            try:
                s3_client().head_object(Bucket=bucket, Key=f"{key}/{MANIFEST}")
                return True
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    return False
                raise
    return (Path(uri) / MANIFEST).exists()


def cache_root() -> Path:
    return Path(os.environ.get("RANKADAPTOR_CACHE", Path.home() / ".cache" / "rankadaptor"))


def local_dir(uri: str, verify_manifest: bool = True) -> Path:
    """A local directory holding the artifact at uri (downloaded into the cache when on S3)."""
    if not is_s3(uri):
        path = Path(uri).expanduser()
        if not path.is_dir():
            raise UserError(f"no directory at {uri!r}: expected a local directory or s3://bucket/prefix")
        if verify_manifest:
            verify(path, uri)
        return path
    bucket, key = split_s3(uri)
    client = s3_client()
    target = cache_root() / "s3" / bucket / key
    if not verify_manifest and not exists(uri):
        return _download_prefix(client, uri, target)
    with s3_errors(uri):
        manifest = client.get_object(Bucket=bucket, Key=f"{key}/{MANIFEST}")["Body"].read()
        if (target / MANIFEST).exists() and (target / MANIFEST).read_bytes() == manifest:
            verify(target, uri)
            return target
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=_ensure(target.parent)))
        for name in json.loads(manifest)["files"]:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, f"{key}/{name}", str(staging / name))
        (staging / MANIFEST).write_bytes(manifest)
    verify(staging, uri)
    _replace_dir(staging, target)
    return target


def _download_prefix(client, uri: str, target: Path) -> Path:
    """Every object under an S3 prefix that other tools wrote (a user's base model): no manifest to
    check, so the local copy is refreshed whenever the listing (keys and ETags) changes."""
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        objects = s3_listing(client, uri)
        if not objects:
            raise UserError(f"nothing at {uri!r}: expected a folder of files under that prefix")
        listing = json.dumps(objects)
        if (target / ".listing.json").exists() and (target / ".listing.json").read_text() == listing:
            return target
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=_ensure(target.parent)))
        for name, _ in objects:
            path = staging / name[len(key) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, name, str(path))
    (staging / ".listing.json").write_text(listing)
    _replace_dir(staging, target)
    return target


def s3_listing(client, uri: str) -> list[list[str]]:
    """Sorted [key, ETag] of every object under the S3 folder uri (empty if none): what identifies a folder
    written by other tools, which has no manifest."""
    bucket, key = split_s3(uri)
    return sorted([o["Key"], o["ETag"]] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{key}/" if key else "") for o in page.get("Contents", []))


def local_file(uri: str) -> Path:
    """A local copy of the single file at uri (downloaded into the cache when on S3)."""
    if not is_s3(uri):
        path = Path(uri).expanduser()
        if not path.is_file():
            raise UserError(f"no file at {uri!r}: expected a local file or s3://bucket/key")
        return path
    bucket, key = split_s3(uri)
    target = cache_root() / "s3" / bucket / key
    staging = _ensure(target.parent) / f".{target.name}.tmp-{os.getpid()}"
    with s3_errors(uri):
        s3_client().download_file(bucket, key, str(staging))
    os.replace(staging, target)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _replace_dir(source: Path, target: Path) -> None:
    """Move a finished directory into place; an older version at target is removed afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def writing_dir(uri: str) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it becomes the artifact at uri, on error nothing does."""
    if is_s3(uri):
        staging = Path(tempfile.mkdtemp(prefix="rankadaptor-"))
    else:
        target = Path(uri).expanduser()
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=_ensure(target.parent)))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700: the artifact must be readable like any new folder
    try:
        yield staging
        _write_manifest(staging)
        if is_s3(uri):
            _upload_dir(staging, uri)
            shutil.rmtree(staging)
        else:
            _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _upload_dir(directory: Path, uri: str) -> None:
    bucket, key = split_s3(uri)
    client = s3_client()
    with s3_errors(uri):
        client.head_bucket(Bucket=bucket)
        # The manifest goes last: until it lands, readers see no artifact at this URI.
        client.delete_object(Bucket=bucket, Key=f"{key}/{MANIFEST}")
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
            client.upload_file(str(path), bucket, f"{key}/{path.relative_to(directory).as_posix()}")
        client.upload_file(str(directory / MANIFEST), bucket, f"{key}/{MANIFEST}")


def remove(uri: str) -> None:
    """Delete the artifact at uri (its manifest first, so no reader sees it half-deleted)."""
    if not is_s3(uri):
        shutil.rmtree(Path(uri).expanduser(), ignore_errors=True)
        return
    bucket, key = split_s3(uri)
    client = s3_client()
    with s3_errors(uri):
        client.delete_object(Bucket=bucket, Key=f"{key}/{MANIFEST}")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{key}/"):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write one JSON file in place by rename (for files inside a directory being written or local state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
