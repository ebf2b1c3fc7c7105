"""Fetching ``s3://bucket/key`` into the URL cache with boto3 (imported only here, when used).

Credentials come from the usual AWS chain (environment, config files, instance roles); with none
configured, requests are anonymous, for public buckets. ``AWS_ENDPOINT_URL`` points at another
S3-compatible server. The cache discipline is the one of ``download.cache``: the object goes to a
partial file, is checked (size, and MD5 for a single-part upload's ETag), moved in whole, and
only then does the URL's record point at it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .cache import Record, UrlCache
from .fetch import HINT, cached_or_raise, why_offline
from .http import DownloadError, EntryNotFoundError, offline
from .partial import claim, lock
from .transfer import CHUNK, progress_bar

logger = logging.getLogger(__name__)


def fetch_s3(url: str, *, cache_dir=None, force_download: bool = False, local_files_only: bool = False,
             progress: bool | None = None) -> Path:
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    cache = UrlCache(cache_dir)
    cached = None if force_download else cache.lookup(url)
    if local_files_only or offline():
        return cached_or_raise(url, cache.folder, cached[0] if cached else None, False, why_offline(local_files_only))
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
            logger.warning("could not reach S3 for %s (%s); using the cached copy", url, err)
            return cached[0]
        raise DownloadError(f"could not reach S3 for {url}: {err}. {HINT}") from None
    etag, size = head["ETag"], head["ContentLength"]
    if cached is not None and cached[1].etag == etag and cached[1].size == size:
        return cached[0]
    with lock(cache.lock_path(url)):
        cached = None if force_download else cache.lookup(url)
        if cached is not None and cached[1].etag == etag and cached[1].size == size:
            return cached[0]
        partial = claim(cache.blobs, cache.key(url), None)
        bar = progress_bar(url, size, progress)
        try:
            with open(partial, "wb") as f:
                client.download_fileobj(bucket, key, f, Callback=bar.update if bar is not None else None)
            digest = _verify(partial, url, etag, size)
            return cache.store(partial, Record(url=url, etag=etag, size=size, sha256=digest))
        except ClientError as err:
            partial.unlink(missing_ok=True)
            raise _explain(client, err, bucket, key, url, anonymous) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            if bar is not None:
                bar.close()


def _verify(path: Path, url: str, etag: str, size: int) -> str:
    """The sha256 of the object, after checking its size and (single-part uploads) its MD5."""
    got = path.stat().st_size
    if got != size:
        raise DownloadError(f"{url} arrived with {got} bytes, not {size}")
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha256.update(block)
            md5.update(block)
    etag = etag.strip('"')
    if "-" not in etag and len(etag) == 32 and md5.hexdigest() != etag:  # a single-part upload's ETag is its MD5
        raise DownloadError(f"{url} arrived with MD5 {md5.hexdigest()}, not its ETag {etag}")
    return sha256.hexdigest()


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
