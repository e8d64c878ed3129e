"""Listing is streamed: SOURCE patterns are matched against the filesystem's lazy listing."""

from __future__ import annotations

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from synthsieve.io import sources


def test_listing_a_prefix_is_consumed_one_object_at_a_time(monkeypatch):
    produced = []

    def fake_list(self, prefix):
        for i in range(100_000):
            produced.append(i)
            yield FileMetadata(f"s3://bucket/photos/{i:06d}.jpg", 10)

    fs = FileSystems.get_filesystem("s3://bucket/photos/")
    monkeypatch.setattr(type(fs), "_list", fake_list)
    it = sources.iter_matching("s3://bucket/photos/**")
    first = [next(it) for _ in range(3)]
    assert first == [f"s3://bucket/photos/{i:06d}.jpg" for i in range(3)]
    assert len(produced) == 3  # nothing beyond what was consumed was listed


def test_glob_filters_the_listing_and_a_missing_object_is_a_prefix(monkeypatch):
    listed = ["s3://b/p/a.jpg", "s3://b/p/b.txt", "s3://b/p/sub/c.jpg"]

    def fake_list(self, prefix):
        for p in listed:
            if p.startswith(prefix):
                yield FileMetadata(p, 1)

    fs = FileSystems.get_filesystem("s3://b/p/")
    monkeypatch.setattr(type(fs), "_list", fake_list)
    monkeypatch.setattr(type(fs), "exists", lambda self, path: path in listed)
    assert list(sources.iter_matching("s3://b/p/*.jpg")) == ["s3://b/p/a.jpg"]
    assert list(sources.iter_matching("s3://b/p/**.jpg")) == ["s3://b/p/a.jpg",
                                                             "s3://b/p/sub/c.jpg"]
    assert list(sources.iter_matching("s3://b/p/a.jpg")) == ["s3://b/p/a.jpg"]
    assert list(sources.iter_matching("s3://b/p")) == listed  # not an object: a prefix


def test_classify_source(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"")
    (tmp_path / "x.jpg").write_bytes(b"")
    assert sources.classify_source(str(tmp_path)) == ("files", str(tmp_path.resolve()) + "/**")
    assert sources.classify_source(str(tmp_path / "m.parquet"))[0] == "manifest"
    assert sources.classify_source("gs://b/lists/*.csv.gz") == ("manifest", "gs://b/lists/*.csv.gz")
    assert sources.classify_source("s3://b/photos/") == ("files", "s3://b/photos/**")
    assert sources.classify_source(str(tmp_path / "x.jpg"))[0] == "files"


def test_a_directory_split_by_subdirectory_lists_exactly_what_the_recursive_listing_does(
        tmp_path):
    from synthsieve.io.sources import iter_matching, split_directory

    root = tmp_path / "ds"
    for sub in ("00000", "00001", "00002/deeper"):
        (root / sub).mkdir(parents=True)
        (root / sub / "img.png").write_bytes(b"x")
    (root / "top.png").write_bytes(b"x")
    (root / "link.png").symlink_to(root / "top.png")
    (root / "linked-dir").symlink_to(root / "00000")  # not followed, by either listing
    recursive = f"{root}/**"
    parts = split_directory(recursive)
    assert parts == [f"{root}/*", f"{root}/00000/**", f"{root}/00001/**", f"{root}/00002/**"]
    split = [uri for p in parts for uri in iter_matching(p)]
    assert len(split) == len(set(split))
    assert sorted(split) == sorted(iter_matching(recursive))
    assert len(split) == 5

    flat = tmp_path / "flat"
    (flat / "only").mkdir(parents=True)
    assert split_directory(f"{flat}/**") is None  # one subdirectory: nothing to spread
    assert split_directory("s3://bucket/prefix/**") is None


def test_a_local_directory_is_listed_lazily_with_the_files_beams_listing_gives(tmp_path):
    """iter_matching walks a local directory with os.scandir (a million names in one flat
    directory are never held at once) and lists what Beam's own listing lists."""
    import os

    from apache_beam.io.filesystems import FileSystems

    from synthsieve.io.sources import iter_matching

    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    for name in ("top.png", "a/one.jpg", "a/b/two.webp", "a/b/.hidden.png"):
        (root / name).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "far.png").write_bytes(b"x")
    os.symlink(outside, root / "link-to-dir")  # not followed
    os.symlink(root / "top.png", root / "a" / "link-to-file.png")  # a file
    pattern = f"{root}/**"
    listed = iter_matching(pattern)
    assert not isinstance(listed, list | tuple | set)  # a generator, read as it goes
    beams = {m.path for m in FileSystems.match([pattern])[0].metadata_list}
    assert set(listed) == beams == {str(root / n) for n in (
        "top.png", "a/one.jpg", "a/b/two.webp", "a/b/.hidden.png", "a/link-to-file.png")}
