"""Read errors are typed by what went wrong, not by what the path happens to contain."""

from __future__ import annotations

from apache_beam.io.aws.clients.s3.messages import S3ClientError
from apache_beam.io.filesystem import BeamIOError

from synthsieve.io.read import _classify, read_file


def test_a_directory_named_404_is_a_directory_not_a_missing_file(tmp_path):
    folder = tmp_path / "404 not found"
    folder.mkdir()
    result = read_file(str(folder), 1000)
    assert result.error_type == "is_a_directory"
    assert result.message.startswith(f"cannot read {folder}")


def test_a_missing_file_whose_name_says_forbidden_is_not_found(tmp_path):
    assert read_file(str(tmp_path / "403 forbidden.jpg"), 1000).error_type == "not_found"


def test_permission_error_on_a_path_with_404_in_it_is_permission_denied():
    err = PermissionError(13, "Permission denied", "/corpus/404/img.jpg")
    assert _classify(err) == "permission_denied"
    assert _classify(BeamIOError("Open failed", {"/corpus/404/img.jpg": err})) == \
        "permission_denied"


def test_object_store_status_codes_decide_the_type():
    assert _classify(S3ClientError("no such key", 404)) == "not_found"
    assert _classify(S3ClientError("access denied for not-found.jpg", 403)) == \
        "permission_denied"
    assert _classify(S3ClientError("slow down", 503)) == "io_error"
    wrapped = OSError("read failed")
    wrapped.__cause__ = S3ClientError("gone", 404)
    assert _classify(wrapped) == "not_found"


def test_text_alone_never_decides():
    assert _classify(OSError("HTTP 404 not found, permission denied, forbidden")) == "io_error"
