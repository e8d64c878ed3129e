"""Reading small objects from S3 (moto_server) and GCS (gcp-storage-emulator) on 127.0.0.1:
Beam's FileSystems.open against synthsieve's open_for_read, in one process.

Beam's S3FileSystem makes a boto3 session and client on every open; open_for_read keeps one
per process. Prints objects/s for each and the ratio (ours / Beam's).

    .venv/bin/python bench/object_store.py --objects 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from corpus import noise_png  # noqa: E402
from servers import CLOUD_ENV, gcs_server, s3_server  # noqa: E402

from synthsieve.io.filesystems import configure, open_for_read  # noqa: E402


def rate(uris: list[str], opener) -> float:
    start = time.perf_counter()
    for uri in uris:
        with opener(uri) as f:
            assert f.read()
    return len(uris) / (time.perf_counter() - start)


def beam_open(uri: str):
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=200)
    args = ap.parse_args()
    os.environ.update(CLOUD_ENV)
    blobs = [noise_png(i, side=32) for i in range(args.objects)]
    result = {}
    with s3_server() as s3:
        c = s3.client()
        c.create_bucket(Bucket="bench")
        for i, data in enumerate(blobs):
            c.put_object(Bucket="bench", Key=f"o/{i:05d}.png", Body=data)
        configure(PipelineOptions(s3.beam_args))
        uris = [f"s3://bench/o/{i:05d}.png" for i in range(args.objects)]
        result["s3"] = {"beam_objects_per_s": round(rate(uris, beam_open), 1),
                        "synthsieve_objects_per_s": round(rate(uris, open_for_read), 1)}
    with gcs_server() as gcs:
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.host
        bucket = gcs.client().create_bucket("bench")
        for i, data in enumerate(blobs):
            bucket.blob(f"o/{i:05d}.png").upload_from_string(data)
        configure(PipelineOptions([]))
        uris = [f"gs://bench/o/{i:05d}.png" for i in range(args.objects)]
        result["gcs"] = {"beam_objects_per_s": round(rate(uris, beam_open), 1),
                         "synthsieve_objects_per_s": round(rate(uris, open_for_read), 1)}
    for store in result.values():
        store["ratio"] = round(store["synthsieve_objects_per_s"] / store["beam_objects_per_s"], 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
