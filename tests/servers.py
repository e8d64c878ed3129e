"""Real servers for tests, started on 127.0.0.1 only: moto_server (S3), gcp-storage-emulator."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout} s")


@contextlib.contextmanager
def running(cmd: list[str], port: int, env: dict | None = None) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    try:
        wait_for_port(port, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# Keep every cloud SDK away from anything but loopback: no instance-metadata probes, fake keys.
CLOUD_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_GCE_CHECK": "True",
    "GCE_METADATA_HOST": f"{LOOPBACK}:9",
    "GCE_METADATA_IP": f"{LOOPBACK}:9",
    "GOOGLE_CLOUD_PROJECT": "test-project",
}


@dataclass
class S3Server:
    endpoint: str
    beam_args: list[str] = field(default_factory=list)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    with running([moto, "-H", LOOPBACK, "-p", str(port)], port, CLOUD_ENV):
        endpoint = f"http://{LOOPBACK}:{port}"
        yield S3Server(endpoint, ["--s3_endpoint_url", endpoint, "--s3_region_name",
                                  "us-east-1", "--s3_access_key_id", "testing",
                                  "--s3_secret_access_key", "testing"])


@dataclass
class GcsServer:
    host: str

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="test-project", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.host})


@contextlib.contextmanager
def gcs_server() -> Iterator[GcsServer]:
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    with running([exe, "start", "--host", LOOPBACK, "--port", str(port), "--in-memory"], port,
                 CLOUD_ENV):
        yield GcsServer(f"http://{LOOPBACK}:{port}")
