"""Object-store setup shared by the command line and the workers.

Reads and writes go through Beam's FileSystems, so gs:// and s3:// need nothing else:
S3 takes Beam's own options (--s3_endpoint_url, --s3_region_name, ...) and the standard AWS
environment; GCS takes the standard Google credentials, or STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import logging
import os

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

log = logging.getLogger("synthsieve.filesystems")


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
