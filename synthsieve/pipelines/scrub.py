"""The scrub job: an audit's tables + a policy -> a kept and a removed manifest, and, with
--apply, the removed objects copied or moved to a quarantine location.

The policy is data (YAML), so a team can review it like code; DEFAULT_POLICY applies when
none is given. Each image's latest row across the audit's runs decides (scores or errors,
by processed_at). Nothing is deleted unless `apply` is `move`, and then only after the copy
was written and verified by size; re-running skips what is already in quarantine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from synthsieve.counters import QUARANTINE_OUTCOMES, SCRUB_DECISIONS, counter, read_counters
from synthsieve.io.filesystems import configure as configure_filesystems
from synthsieve.io.read import is_http
from synthsieve.io.sinks import ERRORS_DIR, SCORES_DIR
from synthsieve.provenance.evidence import AI_EVIDENCE
from synthsieve.runners.choice import local_runner
from synthsieve.schema import VERDICT_AI, VERDICT_INCONCLUSIVE
from synthsieve.transforms.progress import ReportProgress

__all__ = [
    "DEFAULT_POLICY", "EVIDENCE_RULES", "Policy", "PolicyError", "ScrubConfig", "build_scrub",
    "decide", "quarantine", "quarantine_inside", "quarantine_path", "run_scrub",
]

log = logging.getLogger("synthsieve.scrub")

KEEP, REMOVE = SCRUB_DECISIONS
EVIDENCE_RULES = tuple(rule for rule, _ in AI_EVIDENCE)
# The scores columns every kept and removed line carries next to its reason.
DECISION_COLUMNS = ("ai_generated", "verdict", "evidence_verdict")
# What a removed line's `reason` says for each evidence rule.
_REASONS = {
    "c2pa_ai": lambda row, found: f"c2pa {row['c2pa']['validation_state']}: {found}",
    "watermark": lambda row, found: f"{found} watermark",
    "generation_params": lambda row, found: f"generation parameters from {found}",
    "xmp_ai": lambda row, found: f"xmp digitalSourceType {found}",
}


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Policy:
    """What makes an image go. Every field is documented in README ("Scrubbing")."""

    # which verdict column decides: evidence_verdict (pixels and provenance) or verdict
    verdict_column: str = "evidence_verdict"
    remove_verdicts: tuple[str, ...] = (VERDICT_AI,)
    # remove when the pixel score is at least this (None: the verdicts alone decide)
    min_ai_generated: float | None = None
    # taxonomy labels: remove when `source` or `provenance_source` is one of them
    remove_sources: tuple[str, ...] = ()
    # provenance that removes an image whatever the verdict column says
    remove_evidence: tuple[str, ...] = EVIDENCE_RULES
    # images the audit could not score: keep (default; nothing was proven) or remove
    errors: str = KEEP

    @classmethod
    def from_yaml(cls, text: str) -> Policy:
        doc = yaml.safe_load(text) or {}
        if not isinstance(doc, dict):
            raise PolicyError("a policy is a YAML mapping")
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known
        if unknown:
            raise PolicyError(f"unknown policy keys: {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for key, value in doc.items():
            values[key] = tuple(value) if isinstance(value, list) else value
        policy = cls(**values)
        policy.check()
        return policy

    def check(self) -> None:
        if self.verdict_column not in ("evidence_verdict", "verdict"):
            raise PolicyError("verdict_column must be evidence_verdict or verdict")
        bad = set(self.remove_verdicts) - {VERDICT_AI, VERDICT_INCONCLUSIVE, "not_ai_generated"}
        if bad:
            raise PolicyError(f"unknown verdicts in remove_verdicts: {sorted(bad)}")
        bad = set(self.remove_evidence) - set(EVIDENCE_RULES)
        if bad:
            raise PolicyError(f"unknown remove_evidence rules {sorted(bad)} "
                              f"(known: {', '.join(EVIDENCE_RULES)})")
        if self.errors not in (KEEP, REMOVE):
            raise PolicyError("errors must be keep or remove")
        if self.min_ai_generated is not None and not 0 <= self.min_ai_generated <= 1:
            raise PolicyError("min_ai_generated must be between 0 and 1")


DEFAULT_POLICY = Policy()


def decide(row: dict[str, Any], policy: Policy) -> tuple[str, str]:
    """(keep | remove, reason) for one image's latest row (a scores or an errors row)."""
    if "stage" in row:  # an errors row
        reason = f"not scored: {row['stage']}/{row['error_type']}"
        return (REMOVE if policy.errors == REMOVE else KEEP), reason
    for rule, found_in in AI_EVIDENCE:
        found = found_in(row) if rule in policy.remove_evidence else None
        if found:
            return REMOVE, _REASONS[rule](row, found)
    for column in ("source", "provenance_source"):
        if row.get(column) and row[column] in policy.remove_sources:
            return REMOVE, f"{column} {row[column]}"
    score = row.get("ai_generated")
    if policy.min_ai_generated is not None and score is not None \
            and score >= policy.min_ai_generated:
        return REMOVE, f"ai_generated {score:.3f} >= {policy.min_ai_generated}"
    verdict = row.get(policy.verdict_column) or row.get("verdict")
    if verdict in policy.remove_verdicts:
        return REMOVE, f"{policy.verdict_column} {verdict}"
    return KEEP, f"{policy.verdict_column} {verdict}"


def quarantine_path(uri: str, to: str) -> str:
    """Where a removed object goes: TO/<scheme>/<bucket or host>/<its path>, with no `..`
    or empty segment surviving, so a hostile URI cannot escape TO."""
    parts = urlsplit(uri)
    if parts.scheme and len(parts.scheme) > 1:
        scheme, root, path = parts.scheme.lower(), parts.netloc, parts.path
    else:
        scheme, root, path = "file", "", uri
    segments = [s for s in [root, *PurePosixPath(path).parts]
                if s not in ("", "/", ".", "..") and "\x00" not in s]
    if not segments:
        raise ValueError(f"no object path in {uri!r}")
    return FileSystems.join(to.rstrip("/"), scheme, *segments)


def _size(path: str) -> int | None:
    try:
        match = FileSystems.match([path])[0].metadata_list
    except Exception:
        return None
    return match[0].size_in_bytes if match else None


def quarantine(uri: str, to: str, mode: str) -> tuple[str, str]:
    """Copy (or move) one object; idempotent. Returns (status, detail)."""
    if is_http(uri):
        return "skipped", "http(s) objects cannot be moved; the removed manifest lists it"
    try:
        dest = quarantine_path(uri, to)
    except ValueError as e:
        return "failed", str(e)
    src_size, dest_size = _size(uri), _size(dest)
    if src_size is None:
        if dest_size is not None:
            return "done_before", dest
        return "failed", "source not found"
    if dest_size != src_size:
        with FileSystems.open(uri) as src, FileSystems.create(dest) as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        if _size(dest) != src_size:
            return "failed", f"copy to {dest} has the wrong size"
    if mode == "move":
        FileSystems.delete([uri])
        return "moved", dest
    return "copied" if dest_size != src_size else "done_before", dest


@dataclass
class ScrubConfig:
    audit_dir: str
    out_dir: str
    policy: Policy = field(default_factory=Policy)
    apply: str | None = None  # None (dry run), "copy" or "move"
    to: str | None = None


def _latest(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: (r.get("processed_at") is not None, r.get("processed_at")))


class _Decide(beam.DoFn):
    def __init__(self, policy: Policy):
        self._policy = policy
        self._counts = {k: counter(k) for k in SCRUB_DECISIONS}

    def process(self, keyed: tuple[str, Iterable[dict[str, Any]]]) -> Iterable[Any]:
        row = _latest(keyed[1])
        action, reason = decide(row, self._policy)
        self._counts[action].inc()
        extra = row.get("extra") or []
        # the score and verdicts beside the reason, so a reviewer of removed.jsonl sees
        # why without joining it back to the audit (null for an image that was not scored)
        out = {"image_id": row["image_id"], "uri": row["uri"],
               **{k: v for k, v in (extra.items() if isinstance(extra, dict) else extra)},
               "reason": reason, **{k: row.get(k) for k in DECISION_COLUMNS}}
        yield beam.pvalue.TaggedOutput(action, out)


class _Quarantine(beam.DoFn):
    def __init__(self, to: str, mode: str):
        self._to = to
        self._mode = mode

    def process(self, row: dict[str, Any]) -> Iterable[dict[str, Any]]:
        try:
            status, detail = quarantine(row["uri"], self._to, self._mode)
        except Exception as e:  # one object's failure is a row, not a stopped job
            status, detail = "failed", f"{type(e).__name__}: {e}"
        counter(status).inc()
        yield {"image_id": row["image_id"], "uri": row["uri"], "status": status,
               "detail": detail}


def _jsonl(path_prefix: str) -> beam.PTransform:
    """One JSON Lines file at exactly `<prefix>.jsonl`, streamed (nothing collected)."""
    return beam.io.WriteToText(path_prefix, file_name_suffix=".jsonl", num_shards=1,
                               shard_name_template="")


def build_scrub(p: beam.Pipeline, cfg: ScrubConfig) -> None:
    tables = []
    for table in (SCORES_DIR, ERRORS_DIR):
        pattern, files = _table_files(cfg.audit_dir, table)
        if files:
            tables.append(p | f"Read{table}" >> beam.io.ReadFromParquet(pattern))
    if not tables:
        raise FileNotFoundError(f"no scores or errors Parquet files under {cfg.audit_dir}")
    decided = (tables
               | "AllRows" >> beam.Flatten()
               | "ById" >> beam.Map(lambda r: (r["image_id"], r))
               | "PerImage" >> beam.GroupByKey()
               | "Progress" >> beam.ParDo(ReportProgress())
               | "Decide" >> beam.ParDo(_Decide(cfg.policy)).with_outputs(KEEP, REMOVE))
    for action, name in ((KEEP, "kept"), (REMOVE, "removed")):
        (decided[action]
         | f"{name}ToJson" >> beam.Map(lambda r: json.dumps(r, default=str))
         | f"Write{name}" >> _jsonl(FileSystems.join(cfg.out_dir, name)))
    if cfg.apply:
        (decided[REMOVE]
         | "Quarantine" >> beam.ParDo(_Quarantine(cfg.to, cfg.apply))
         | "ActionsToJson" >> beam.Map(lambda r: json.dumps(r, default=str))
         | "WriteActions" >> _jsonl(FileSystems.join(cfg.out_dir, cfg.apply)))


def table_rows(audit_dir: str) -> int:
    """Rows in an audit's tables, from the Parquet footers: the number of images a scrub
    decides on when the directory holds one run (more rows than images after re-runs)."""
    import pyarrow.parquet as pq

    total = 0
    for table in (SCORES_DIR, ERRORS_DIR):
        for path in _table_files(audit_dir, table)[1]:
            with FileSystems.open(path) as fh:
                total += pq.ParquetFile(fh).metadata.num_rows
    return total


def _table_files(audit_dir: str, table: str) -> tuple[str, list[str]]:
    """(the glob of an audit table's Parquet files, the files it matches)."""
    pattern = FileSystems.join(audit_dir, table, "**.parquet")
    return pattern, [m.path for m in FileSystems.match([pattern])[0].metadata_list]


def run_scrub(cfg: ScrubConfig, pipeline_args: list[str] | None = None) -> dict[str, Any]:
    """Runs the scrub; returns (and writes OUT/summary.json) the counts."""
    if cfg.apply not in (None, "copy", "move"):
        raise ValueError("apply must be copy or move")
    if cfg.apply and not cfg.to:
        raise ValueError("--apply needs --to URI (the quarantine location)")
    if cfg.apply and cfg.to and quarantine_inside(cfg.to, cfg.audit_dir):
        raise ValueError("--to must not be inside the audit directory")
    options = PipelineOptions(pipeline_args or [])
    configure_filesystems(options)
    p = beam.Pipeline(runner=local_runner(options), options=options)
    build_scrub(p, cfg)
    result = p.run()
    result.wait_until_finish()
    known = read_counters(result)
    counts = known or {}
    summary = {"audit": cfg.audit_dir, "out": cfg.out_dir,
               # None (JSON null) when the runner's counters could not be read
               "kept": counts.get(KEEP, 0) if known is not None else None,
               "removed": counts.get(REMOVE, 0) if known is not None else None,
               "apply": cfg.apply or "dry run", "to": cfg.to,
               "actions": {k: counts[k] for k in QUARANTINE_OUTCOMES if counts.get(k)},
               "policy": asdict(cfg.policy)}
    with FileSystems.create(FileSystems.join(cfg.out_dir, "summary.json")) as fh:
        fh.write(json.dumps(summary, indent=2).encode())
    return summary


def quarantine_inside(to: str, audit_dir: str) -> bool:
    a, b = to.rstrip("/") + "/", audit_dir.rstrip("/") + "/"
    return a.startswith(b)
