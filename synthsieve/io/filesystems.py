"""Object-store setup shared by the command line and the workers.

Reads and writes go through Beam's FileSystems, so gs:// and s3:// need nothing else:
S3 takes Beam's own options (--s3_endpoint_url, --s3_region_name, ...) and the standard AWS
environment; GCS takes the standard Google credentials, or STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import IO, Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

__all__ = ["configure", "is_remote", "open_for_read", "use_gcs_emulator_credentials"]

log = logging.getLogger("synthsieve.io.filesystems")


def use_gcs_emulator_credentials() -> None:
    """Anonymous GCS access when STORAGE_EMULATOR_HOST points at an emulator.

    Beam looks up Google default credentials once per process and, when there are none,
    retries with back-off for about 20 s (probing the GCE metadata server on the way) before
    connecting anonymously. An emulator needs no credentials, so we settle the lookup up
    front. This sets Beam's private credential cache; there is no public switch for it.
    """
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # apache-beam without the gcp extra: nothing to configure
        return
    creds = getattr(auth, "_Credentials", None)
    if creds is None:
        return
    with creds._credentials_lock:  # noqa: SLF001
        if not creds._credentials_init:  # noqa: SLF001
            creds._credentials = None  # noqa: SLF001
            creds._credentials_init = True  # noqa: SLF001


def configure(options: PipelineOptions) -> None:
    """Makes the pipeline's filesystem options (S3 endpoint, keys, ...) apply here too."""
    FileSystems.set_options(options)
    use_gcs_emulator_credentials()


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


_S3_LOCK = threading.Lock()
_S3IO: dict[tuple[Any, ...], Any] = {}


def _s3io() -> Any:
    """One S3IO (so one boto3 client) per process and set of S3 options.

    Beam's S3FileSystem builds a new boto3 session and client for every open: botocore loads
    and parses the S3 service model each time, which costs more than reading a small object
    (bench/object_store.py measures both ways). A boto3 client is thread-safe once made, so
    the worker's read threads share one.
    """
    from apache_beam.io.aws import s3io

    options = FileSystems._pipeline_options or PipelineOptions()  # noqa: SLF001
    o = options.view_as(S3Options)
    key = (o.s3_endpoint_url, o.s3_region_name, o.s3_access_key_id, o.s3_secret_access_key,
           o.s3_session_token, o.s3_disable_ssl, o.s3_verify, o.s3_api_version)
    with _S3_LOCK:
        if key not in _S3IO:
            _S3IO[key] = s3io.S3IO(options=options)
        return _S3IO[key]


def open_for_read(uri: str) -> IO[bytes]:
    """The object's bytes as stored (no decompression by file name), through Beam's
    FileSystems, but with the process's one S3 client for s3:// (see _s3io)."""
    if uri.startswith("s3://"):
        return _s3io().open(uri, "r")
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)
