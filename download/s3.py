"""Fetching ``s3://bucket/key`` into the cache with boto3 (imported only here, when used).

Credentials come from the usual AWS chain (environment, config files, instance roles); with none
configured, requests are anonymous, for public buckets. ``AWS_ENDPOINT_URL`` points at another
S3-compatible server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .cache import DownloadCache, Entry
from .http import CHUNK, DownloadError, EntryNotFoundError, from_cache_only, offline, same_file


def fetch_s3(url: str, *, cache_dir=None, force_download: bool = False, local_files_only: bool = False,
             progress: bool | None = None) -> Path:
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    cache = DownloadCache(cache_dir)
    cached = None if force_download else cache.lookup(url)
    if local_files_only or offline():
        return from_cache_only(cache, url, cached, local_files_only)
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    session = boto3.session.Session()
    anonymous = session.get_credentials() is None
    client = session.client("s3", config=Config(signature_version=UNSIGNED) if anonymous else None)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        raise _explain(client, err, bucket, key, url, anonymous) from None
    except (EndpointConnectionError, BotoCoreError) as err:
        if cached is not None:
            return cached[0]
        raise DownloadError(f"could not reach S3 for {url}: {err}") from None
    remote = Entry(url=url, etag=head["ETag"], size=head["ContentLength"], sha256=None)
    if cached is not None and same_file(cached[1], remote):
        return cached[0]
    with cache.lock(url):
        temporary = cache.temporary(url)
        try:
            with open(temporary, "wb") as f:
                client.download_fileobj(bucket, key, f)
            _verify(temporary, url, remote)
            return cache.store(temporary, remote)
        except ClientError as err:
            temporary.unlink(missing_ok=True)
            raise _explain(client, err, bucket, key, url, anonymous) from None
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def _verify(path: Path, url: str, remote: Entry) -> None:
    size = path.stat().st_size
    if size != remote.size:
        raise DownloadError(f"{url} arrived with {size} bytes, not {remote.size}")
    etag = remote.etag.strip('"')
    if "-" not in etag and len(etag) == 32:  # a single-part upload's ETag is the MD5 of the content
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
        if digest.hexdigest() != etag:
            raise DownloadError(f"{url} arrived with MD5 {digest.hexdigest()}, not its ETag {etag}")


def _explain(client, err, bucket: str, key: str, url: str, anonymous: bool) -> Exception:
    code = str(err.response.get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NoSuchBucket"):
        try:
            client.head_bucket(Bucket=bucket)
        except Exception:  # noqa: BLE001 - any failure here means the bucket is not there for us
            return EntryNotFoundError(f"{url}: the bucket {bucket!r} does not exist")
        return EntryNotFoundError(f"{url}: the bucket {bucket!r} has no key {key!r}")
    if code in ("403", "AccessDenied", "AllAccessDisabled"):
        how = "no AWS credentials were found, so the request was anonymous" if anonymous else "check the AWS credentials"
        return DownloadError(f"{url}: access denied ({how})")
    return DownloadError(f"{url}: S3 answered {code or err}")
