"""Audits against real object-store servers on 127.0.0.1: moto_server (S3) and
gcp-storage-emulator (GCS). Inputs are read from a bucket, outputs written back to one."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus import good_and_bad_files
from servers import gcs_server, s3_server

from synthsieve.cli import main


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def gcs():
    with gcs_server() as server:
        yield server


def _tables(blobs: dict[str, bytes], table: str) -> pa.Table:
    parts = [pq.read_table(io.BytesIO(data)) for key, data in sorted(blobs.items())
             if f"/{table}/" in key and key.endswith(".parquet")]
    assert parts, f"no {table} shards in the bucket"
    return pa.concat_tables(parts)


@pytest.mark.slow
def test_audit_a_bucket_prefix_and_manifest_on_s3_and_write_back(s3, cloud_env, tiny_model,
                                                                 tmp_path):
    # a readable image on the worker's disk that the bucket's manifest names
    secret = tmp_path / "secret.png"
    secret.write_bytes(good_and_bad_files()["good.png"][0])
    c = s3.client()
    c.create_bucket(Bucket="corpus")
    files = good_and_bad_files()
    for name, (data, _) in files.items():
        c.put_object(Bucket="corpus", Key=f"imgs/{name}", Body=data)
    c.put_object(Bucket="corpus", Key="imgs/deeper/again.jpg", Body=files["good.jpg"][0])
    manifest = ("id,uri,caption\n"
                "m-good,s3://corpus/imgs/good.png,from the manifest\n"
                "m-missing,s3://corpus/imgs/not-there.jpg,deleted\n"
                "m-nobucket,s3:///x.jpg,malformed\n"
                f"m-local,{secret},a worker's local file\n"
                f"m-file,file://{secret},the same by file://\n")
    c.put_object(Bucket="corpus", Key="lists/m.csv", Body=manifest.encode())

    assert main(["-q", "audit", "s3://corpus/imgs/", "s3://corpus/lists/m.csv",
                 "--out", "s3://corpus/out", "--model", str(tiny_model), *s3.beam_args]) == 0

    keys = [o["Key"] for o in c.list_objects_v2(Bucket="corpus", Prefix="out/")["Contents"]]
    blobs = {k: c.get_object(Bucket="corpus", Key=k)["Body"].read() for k in keys}
    scores, errors = _tables(blobs, "scores"), _tables(blobs, "errors")
    expected_inputs = len(files) + 1 + 5
    assert scores.num_rows + errors.num_rows == expected_inputs
    summary = json.loads(blobs["out/summary.json"])
    assert summary["inputs"] == expected_inputs and summary["accounted_for"]
    errs = {r["uri"].rsplit("/", 1)[-1]: r for r in errors.to_pylist()}
    for name, (_, (outcome, detail)) in files.items():
        if outcome == "error":
            assert (errs[name]["stage"], errs[name]["error_type"]) == detail, name
    assert (errs["not-there.jpg"]["stage"], errs["not-there.jpg"]["error_type"]) == (
        "read", "not_found")
    assert errs["x.jpg"]["error_type"] == "invalid_uri"
    # a manifest in a bucket may not make the worker read its own disk
    by_id_err = {r["image_id"]: r for r in errors.to_pylist()}
    for image_id in ("m-local", "m-file"):
        row = by_id_err[image_id]
        assert (row["stage"], row["error_type"]) == ("read", "forbidden_path"), row
        assert "may not name local files" in row["message"]
    by_id = {r["image_id"]: r for r in scores.to_pylist()}
    assert dict(by_id["m-good"]["extra"]) == {"caption": "from the manifest"}
    assert "s3://corpus/imgs/deeper/again.jpg" in scores.column("uri").to_pylist()


def test_audit_on_gcs_emulator_reads_a_prefix_and_writes_back(gcs, cloud_env, monkeypatch,
                                                              tiny_model):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    client = gcs.client()
    bucket = client.create_bucket("gcorpus")
    files = good_and_bad_files()
    for name in ("good.jpg", "good.png", "truncated.jpg", "notes.txt"):
        bucket.blob(f"imgs/{name}").upload_from_string(files[name][0])
    # the object store's 404 (an exception with a status, not a FileNotFoundError) is not_found
    bucket.blob("lists/m.csv").upload_from_string(
        "uri\ngs://gcorpus/imgs/good.png\ngs://gcorpus/imgs/gone.jpg\n")

    assert main(["-q", "audit", "gs://gcorpus/imgs", "gs://gcorpus/lists/m.csv",
                 "--out", "gs://gcorpus/out", "--model", str(tiny_model)]) == 0

    blobs = {b.name: b.download_as_bytes() for b in client.list_blobs("gcorpus", prefix="out/")}
    scores, errors = _tables(blobs, "scores"), _tables(blobs, "errors")
    assert sorted(scores.column("uri").to_pylist()) == [
        "gs://gcorpus/imgs/good.jpg", "gs://gcorpus/imgs/good.png",
        "gs://gcorpus/imgs/good.png"]
    assert sorted(errors.column("error_type").to_pylist()) == [
        "not_an_image", "not_found", "truncated"]
    assert json.loads(blobs["out/summary.json"])["accounted_for"] is True
