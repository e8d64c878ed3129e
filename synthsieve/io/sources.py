"""Turns the SOURCE arguments (directories, globs, manifests) into ImageRefs.

Listings and manifests are streamed, never loaded whole, so a folder or manifest of a
million images costs memory per element, not per corpus.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems

from synthsieve.elements import ERRORS, ImageRef
from synthsieve.io.filesystems import is_remote, use_gcs_emulator_credentials
from synthsieve.schema import STAGE_READ, error_row

__all__ = [
    "MANIFEST_SUFFIXES", "MAX_ROW_CHARS", "MAX_ROW_GROUP_BYTES", "MAX_URI_CHARS",
    "READABLE_SCHEMES", "URI_COLUMNS", "ExpandSources", "SourceError", "check_manifest",
    "classify_source", "count_references", "image_id_for", "iter_matching", "iter_references",
    "lists_nothing", "local_path_refusal", "manifest_format", "outside_local_roots",
    "resolve_roots", "split_directory", "validate_uri",
]

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
_GLOB_CHARS = re.compile(r"[*?\[]")
# FileSystems reads gs, s3 and local files; http(s) is fetched with aiohttp.
READABLE_SCHEMES = ("gs", "s3", "file", "http", "https")
MAX_URI_CHARS = 4096
URI_COLUMNS = ("uri", "url")  # a manifest's URI column, unless --uri-column names another
# One manifest row (a URI and its extra columns, such as a caption): a longer line or field
# is that row's error, not a line read whole into memory. Real manifest rows are far shorter.
MAX_ROW_CHARS = 1 << 20
# A Parquet row group is read whole: one that would decode to more than this is refused.
MAX_ROW_GROUP_BYTES = 1 << 30
csv.field_size_limit(MAX_ROW_CHARS)


class SourceError(ValueError):
    """A SOURCE argument or manifest that cannot be used at all (a usage error)."""


def image_id_for(uri: str) -> str:
    return hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def manifest_format(path: str) -> str | None:
    lower = path.lower()
    for suffix in (".gz", ".bz2", ".zst", ".deflate"):
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
    for suffix in MANIFEST_SUFFIXES:
        if lower.endswith(suffix):
            return "jsonl" if suffix == ".ndjson" else suffix[1:]
    return None


def classify_source(source: str) -> tuple[str, str]:
    """('manifest' | 'files', pattern) for one SOURCE argument.

    A directory becomes a recursive pattern; a glob or a single file is matched as given.
    Local paths that do not exist are refused here, before a pipeline is built.
    """
    if not source:
        raise SourceError("empty SOURCE")
    scheme = urlsplit(source).scheme
    is_remote = len(scheme) > 1  # a Windows drive letter is not a scheme
    if manifest_format(source):
        if not is_remote and not _GLOB_CHARS.search(source) and not Path(source).is_file():
            raise SourceError(f"manifest {source} does not exist")
        return "manifest", source
    if _GLOB_CHARS.search(source):
        return "files", source
    if is_remote:
        # gs://b/prefix/ is a prefix; gs://b/name is an object, or a prefix if none is there.
        return "files", source.rstrip("/") + "/**" if source.endswith("/") else source
    path = Path(source)
    if path.is_dir():
        return "files", str(path.resolve()) + "/**"
    if path.is_file():
        return "files", str(path.resolve())
    raise SourceError(f"{source} is not a file, directory, glob or manifest")


def split_directory(pattern: str) -> list[str] | None:
    """A local directory's recursive pattern as disjoint patterns: one per subdirectory and
    one for the files at its top; None when it has fewer than two subdirectories (nothing
    to spread) or is not a local directory pattern."""
    if "://" in pattern or not pattern.endswith("/**"):
        return None
    root = pattern[:-3]
    if _GLOB_CHARS.search(root) or not Path(root).is_dir():
        return None
    # Symbolic links are not followed, as the recursive listing does not follow them.
    subdirs = sorted(e.path for e in os.scandir(root) if e.is_dir(follow_symlinks=False))
    if len(subdirs) < 2:
        return None
    return [f"{root}/*", *(f"{d}/**" for d in subdirs)]


def iter_matching(pattern: str) -> Iterator[str]:
    """Yields paths matching a glob one at a time.

    FileSystems.match returns the whole listing as one list; for a prefix of millions of
    objects that is the corpus in memory, so walk the filesystem's own lazy listing and
    filter it with Beam's own glob translation instead.
    """
    top = pattern[:-2]
    if ("://" not in pattern and pattern.endswith("/*") and not _GLOB_CHARS.search(top)
            and Path(top).is_dir()):
        # a local directory's own files (split_directory's first pattern): one scandir
        # instead of a walk of the whole tree filtered down to its top
        for entry in sorted(os.scandir(top), key=lambda e: e.name):
            if not entry.is_dir():  # as os.walk sorts them: links to files are files
                yield entry.path
        return
    root = pattern[:-3]
    if ("://" not in pattern and pattern.endswith("/**") and not _GLOB_CHARS.search(root)
            and Path(root).is_dir()):
        yield from _walk_files(root)
        return
    fs = FileSystems.get_filesystem(pattern)
    if not _GLOB_CHARS.search(pattern):
        if fs.exists(pattern):
            yield pattern
            return
        if "://" not in pattern:
            return
        # An object store has no directories: a name that is not an object is a prefix.
        pattern = pattern.rstrip("/") + "/**"
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    regex = re.compile(FileSystem.translate_pattern(pattern))
    list_root = prefix if prefix.endswith("/") else fs._url_dirname(prefix)  # noqa: SLF001
    for metadata in fs._list(list_root):  # noqa: SLF001  (lazy listing, see docstring)
        if regex.match(metadata.path):
            yield metadata.path


def _walk_files(root: str) -> Iterator[str]:
    """Every file under a local directory, one at a time.

    Beam's local listing (os.walk) builds each directory's whole list of names first: a
    flat directory of a million files is a million names in memory. os.scandir's iterator
    is read as it goes. As os.walk does, links to directories are not followed and links
    to files are files.
    """
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = os.scandir(directory)
        except OSError:  # unreadable, or gone since it was listed: os.walk skips it too
            continue
        with entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if not is_dir:
                    yield entry.path
                elif not entry.is_symlink():
                    pending.append(entry.path)


def lists_nothing(pattern: str) -> bool:
    """True when a local file pattern matches no file (checked before a run starts: a
    source that lists nothing is a mistake, not an empty success)."""
    return next(iter_matching(pattern), None) is None


class _ListFiles(beam.DoFn):
    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def process(self, pattern: str) -> Iterable[ImageRef]:
        for path in iter_matching(pattern):
            yield ImageRef(uri=path, image_id=image_id_for(path), extra=None)


def _stringify(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def validate_uri(uri: str) -> str | None:
    """The reason a manifest URI is unusable, or None when it can be read."""
    if not uri.strip():
        return "empty uri"
    if len(uri) > MAX_URI_CHARS:
        return f"uri is longer than {MAX_URI_CHARS} characters"
    if any(ord(c) < 0x20 for c in uri):
        return "uri contains control characters"
    try:
        parts = urlsplit(uri)
    except ValueError as e:
        return f"malformed uri: {e}"
    scheme = parts.scheme.lower()
    if len(scheme) > 1 and scheme not in READABLE_SCHEMES:
        return f"unsupported uri scheme {scheme!r}"
    if scheme in ("gs", "s3") and not parts.netloc:
        return f"{scheme}:// uri without a bucket"
    if scheme in ("http", "https") and not parts.hostname:
        return f"{scheme}:// URL without a host"
    return None


class _ListManifests(beam.DoFn):
    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def process(self, pattern: str) -> Iterable[str]:
        yield from iter_matching(pattern)


def local_path_refusal(manifest: str, path: str, local_roots: tuple[str, ...] | None
                       ) -> str | None:
    """Why a manifest may not make us read local file `path`, or None when it may.

    A manifest in a bucket or on a web server is someone else's file: it may not name files
    on the machine that reads it (a worker's credentials, /proc), which would end up hashed
    in the output or uploaded to a vendor's API. A local manifest may, within --local-root
    when one is given (after `..` and symbolic links are resolved).
    """
    if is_remote(manifest):
        return f"a manifest in remote storage may not name local files ({path})"
    return outside_local_roots(path, local_roots)


def resolve_roots(local_roots: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """--local-root directories with `..` and symbolic links resolved, as
    outside_local_roots compares them."""
    return None if local_roots is None else tuple(os.path.realpath(r) for r in local_roots)


def outside_local_roots(path: str, local_roots: tuple[str, ...] | None) -> str | None:
    """Why local file `path` lies outside the --local-root directories (as resolve_roots
    gives them), or None when it lies inside one, or when no roots are set."""
    if local_roots is None:
        return None
    real = os.path.realpath(path)
    for root in local_roots:
        if os.path.commonpath([real, root]) == root:
            return None
    return (f"{path} resolves to {real}, outside --local-root "
            f"{', '.join(local_roots)}")


class _ReadManifest(beam.DoFn):
    """One manifest file -> ImageRefs (and error rows for unusable rows)."""

    def __init__(self, run_id: str, local_roots: tuple[str, ...] | None = None,
                 uri_columns: tuple[str, ...] = URI_COLUMNS):
        self._run_id = run_id
        self._local_roots = resolve_roots(local_roots)
        self._uri_columns = uri_columns

    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def process(self, path: str) -> Iterable[Any]:
        base = path.rsplit("/", 1)[0] if "/" in path else "."
        fmt = manifest_format(path)
        read = 0
        try:
            rows = _iter_manifest_rows(path, fmt, self._uri_columns)
            for row_number, row in enumerate(rows, start=1):
                read = row_number
                yield from self._to_ref(path, base, row_number, row)
        except Exception as e:  # noqa: BLE001 - a corrupt manifest is an error row, not a crash
            # (pyarrow and csv raise a zoo of types on damaged files: found by fuzzing)
            where = f"{path}#row{read + 1}"
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                image_id=image_id_for(where), uri=where, stage=STAGE_READ,
                error_type="invalid_manifest",
                message=f"{path}: cannot read past row {read}: {type(e).__name__}: {e}"[:2000],
                run_id=self._run_id))

    def _to_ref(self, path: str, base: str, row_number: int, row: Any) -> Iterable[Any]:
        where = f"{path}#row{row_number}"
        if isinstance(row, Exception):
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                image_id=image_id_for(where), uri=where, stage=STAGE_READ,
                error_type="invalid_manifest_row", message=str(row), run_id=self._run_id))
            return
        uri_key = next((c for c in self._uri_columns if c in row), self._uri_columns[0])
        raw_uri = row.get(uri_key)
        uri = _stringify(raw_uri) or ""
        raw_id = _stringify(row.get("id"))
        extra = {k: _stringify(v) for k, v in row.items() if k not in (uri_key, "id")}
        problem = validate_uri(uri)
        if problem:
            image_id = raw_id or image_id_for(where)
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                image_id=image_id, uri=uri or where, stage=STAGE_READ, error_type="invalid_uri",
                message=f"{where}: {problem}", run_id=self._run_id))
            return
        if not urlsplit(uri).scheme or len(urlsplit(uri).scheme) == 1:
            if not uri.startswith("/"):
                uri = FileSystems.join(base, uri)
        elif uri.startswith("file://"):
            uri = uri[len("file://"):]
        if not is_remote(uri):
            refusal = local_path_refusal(path, uri, self._local_roots)
            if refusal:
                yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                    image_id=raw_id or image_id_for(uri), uri=uri, stage=STAGE_READ,
                    error_type="forbidden_path", message=f"{where}: {refusal}",
                    run_id=self._run_id))
                return
        yield ImageRef(uri=uri, image_id=raw_id or image_id_for(uri), extra=extra or None)


def _iter_manifest_rows(path: str, fmt: str | None, uri_columns: tuple[str, ...] = URI_COLUMNS
                        ) -> Iterator[dict[str, Any] | Exception]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            pf = pq.ParquetFile(fh)
            _check_columns(path, pf.schema_arrow.names, uri_columns)
            for group in range(pf.metadata.num_row_groups):
                meta = pf.metadata.row_group(group)
                if meta.total_byte_size > MAX_ROW_GROUP_BYTES:
                    yield ValueError(
                        f"row group {group} ({meta.num_rows} rows) would take "
                        f"{meta.total_byte_size} bytes, over {MAX_ROW_GROUP_BYTES}; skipped")
                    continue
                for batch in pf.iter_batches(batch_size=8192, row_groups=[group]):
                    yield from batch.to_pylist()
        return
    with FileSystems.open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        if fmt == "csv":
            yield from _csv_rows(path, text, uri_columns)
            return
        checked = False
        for line_number, line in enumerate(_bounded_lines(text), start=1):
            if line is None:
                yield ValueError(f"line {line_number} is longer than {MAX_ROW_CHARS} "
                                 "characters; skipped")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield ValueError(f"line {line_number} is not valid JSON: {e}")
                continue
            if not isinstance(row, dict):
                yield ValueError(f"line {line_number} is not a JSON object")
                continue
            if not checked and any(c in row for c in uri_columns):
                checked = True
            elif not checked:
                yield ValueError(f"line {line_number} has no {_either(uri_columns)} field")
                continue
            yield row


def _csv_rows(path: str, text: io.TextIOWrapper, uri_columns: tuple[str, ...]
              ) -> Iterator[dict[str, Any] | Exception]:
    reader = csv.DictReader(text)
    _check_columns(path, reader.fieldnames or [], uri_columns)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # a field over MAX_ROW_CHARS: that row, and read on
            yield ValueError(f"row near line {reader.line_num}: {e}")
            continue
        if None in row:  # more fields than the header names
            row = {k: v for k, v in row.items() if k is not None}
        yield row


def _bounded_lines(text: io.TextIOWrapper) -> Iterator[str | None]:
    """Lines of at most MAX_ROW_CHARS, and None for each longer one, which is skipped
    without being held in memory."""
    while True:
        line = text.readline(MAX_ROW_CHARS + 1)
        if not line:
            return
        if len(line) <= MAX_ROW_CHARS or line.endswith("\n"):
            yield line
            continue
        while line and not line.endswith("\n"):
            line = text.readline(MAX_ROW_CHARS)
        yield None


def check_manifest(path: str, uri_columns: tuple[str, ...] = URI_COLUMNS) -> None:
    """Fails fast on a manifest without its uri column (reads only its header)."""
    fmt = manifest_format(path)
    if fmt == "jsonl":
        return  # per-line: a line without the field becomes its own error row
    for _ in _iter_manifest_rows(path, fmt, uri_columns):
        return


def count_references(sources: list[str]) -> int | None:
    """How many rows a run over `sources` will write (one per reference, and one per
    unusable manifest row), where that is known without listing an object store twice:
    local directories and globs are walked, local manifests counted line by line, Parquet
    manifests anywhere read from their footers. None when a source is not one of those.
    Meant for a progress line: it reads what the run will read, so run it alongside."""
    total = 0
    for source in sources:
        kind, pattern = classify_source(source)
        remote = "://" in pattern
        if kind == "files":
            if remote:
                return None
            total += sum(1 for _ in iter_matching(pattern))
            continue
        if remote and manifest_format(pattern) != "parquet":
            return None
        for path in iter_matching(pattern):
            total += _count_rows(path, manifest_format(path))
    return total


def _count_rows(path: str, fmt: str | None) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            return pq.ParquetFile(fh).metadata.num_rows
    with FileSystems.open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        if fmt == "csv":
            # csv.reader, not lines: a quoted field may hold line breaks; [] is a blank line
            return max(0, sum(1 for row in csv.reader(text) if row) - 1)
        # as the reader sees them: blank lines skipped, an overlong line one (error) row
        return sum(1 for line in _bounded_lines(text) if line is None or line.strip())


def _either(columns: tuple[str, ...]) -> str:
    return " or ".join(f"'{c}'" for c in columns)


def _check_columns(path: str, names: list[str], uri_columns: tuple[str, ...]) -> None:
    if not any(c in names for c in uri_columns):
        hint = "" if uri_columns != URI_COLUMNS else " (--uri-column NAME names another)"
        raise SourceError(
            f"manifest {path} needs a {_either(uri_columns)} column{hint}; it has "
            f"{', '.join(names) or 'none'}")


class _ListOrRead(beam.DoFn):
    """(files | manifest, pattern) -> ImageRefs, and error rows of unusable manifest rows:
    both kinds in one DoFn, so that one worker streams them on without a Flatten."""

    def __init__(self, run_id: str, local_roots: tuple[str, ...] | None,
                 uri_columns: tuple[str, ...]):
        self._files = _ListFiles()
        self._manifests = _ListManifests()
        self._read = _ReadManifest(run_id, local_roots, uri_columns)

    def setup(self) -> None:
        use_gcs_emulator_credentials()

    def process(self, source: tuple[str, str]) -> Iterable[Any]:
        kind, pattern = source
        if kind == "files":
            yield from self._files.process(pattern)
            return
        for manifest in self._manifests.process(pattern):
            yield from self._read.process(manifest)


def iter_references(sources: list[str], run_id: str,
                    uri_columns: tuple[str, ...] = URI_COLUMNS) -> Iterator[Any]:
    """ExpandSources outside a pipeline, one reference at a time: ImageRefs, and the error
    rows of unusable manifest rows (dicts)."""
    expand = _ListOrRead(run_id, None, uri_columns)
    expand.setup()
    for source in sources:
        for out in expand.process(classify_source(source)):
            yield out.value if isinstance(out, beam.pvalue.TaggedOutput) else out


class ExpandSources(beam.PTransform):
    """SOURCE arguments -> {'refs': ImageRef, 'errors': error rows}.

    The listing runs on one worker per pattern; a Reshuffle then spreads the refs so that
    reading and decoding parallelise across workers. With one worker in this process
    (`spread=False`) the refs stream from the listing and the manifests' rows straight into
    reading, and memory does not grow with the number of references.
    """

    def __init__(self, sources: list[str], run_id: str,
                 local_roots: tuple[str, ...] | None = None, local_runner: bool = False,
                 spread: bool = True, uri_columns: tuple[str, ...] = URI_COLUMNS):
        """
        Args:
          sources: directories, globs, object-store prefixes or manifests (.csv, .jsonl,
            .parquet), as given on the command line.
          run_id: the run the error rows belong to.
          local_roots: when given, the only directories a manifest may name local files in.
          local_runner: the job runs in this process (a directory with subdirectories is then
            listed per subdirectory, without a Reshuffle).
          spread: Reshuffle listed files over the workers. False when one worker runs every
            stage: the lazily listed files then stream straight into reading and scoring,
            and memory does not grow with the listing.
          uri_columns: the manifest column holding each image's URI: the first of these a
            manifest has.
        """
        super().__init__()
        self._sources = [classify_source(s) for s in sources]
        self._run_id = run_id
        self._local_roots = local_roots
        self._spread = spread
        self._uri_columns = uri_columns
        # A local directory with subdirectories, on the local runner, is listed as one
        # pattern per subdirectory, which the runner spreads over its threads: no Reshuffle,
        # which would hold every ref in memory (bench/memory.py).
        self._by_subdirectory = (split_directory(self._sources[0][1])
                                 if local_runner and self.unique_uris else None)

    @property
    def unique_uris(self) -> bool:
        """True when no URI can come twice: one file pattern, listed once, no manifest.
        The audit then skips its group-by-URI, which the DirectRunner holds in memory."""
        return [kind for kind, _ in self._sources] == ["files"]

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        file_patterns = [p for kind, p in self._sources if kind == "files"]
        manifest_patterns = [p for kind, p in self._sources if kind == "manifest"]
        p = pbegin.pipeline
        if not self._spread and manifest_patterns:
            listed = (p
                      | "Patterns" >> beam.Create(self._sources)
                      | "ListOrRead" >> beam.ParDo(_ListOrRead(
                          self._run_id, self._local_roots, self._uri_columns)).with_outputs(
                              ERRORS, main="refs"))
            return {"refs": listed.refs, "errors": listed[ERRORS]}
        from_files = (
            p
            | "FilePatterns" >> beam.Create(self._by_subdirectory or file_patterns)
            | "ListFiles" >> beam.ParDo(_ListFiles())
        )
        if not manifest_patterns:
            # no Flatten: on the DirectRunner it is a stage that holds every ref
            refs = (from_files if self._by_subdirectory or not self._spread
                    else from_files | "Spread" >> beam.Reshuffle())
            return {"refs": refs, "errors": p | "NoManifestErrors" >> beam.Create([])}
        manifests = (
            p
            | "ManifestPatterns" >> beam.Create(manifest_patterns)
            | "ListManifests" >> beam.ParDo(_ListManifests())
            | "ReadManifests" >> beam.ParDo(
                _ReadManifest(self._run_id, self._local_roots, self._uri_columns)).with_outputs(
                ERRORS, main="refs")
        )
        refs = (
            (from_files, manifests.refs)
            | "AllRefs" >> beam.Flatten()
            | "Spread" >> beam.Reshuffle()
        )
        return {"refs": refs, "errors": manifests[ERRORS]}
