"""A corpus with many dead links: a 100,000-row manifest of missing files, audited with
--backend none, stays in bounded memory and accounts for every row, run after run.

Beam 2.77's multi_threading mode lost rows or grew without bound on exactly this input
(bench/fnapi_data_loss.py); three runs catch a timing-dependent failure that one would
miss."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ROWS = 100_000
PEAK_RSS_LIMIT_MB = 1536
# Runs the audit in a child and prints that child's peak RSS: the test process's own
# children (other tests' servers, chromium) must not count.
MEASURE = r"""
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(proc.stderr[-3000:])
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


@pytest.fixture(scope="module")
def missing_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("dead_links")
    manifest = root / "m.csv"
    with open(manifest, "w") as f:
        f.write("uri\n")
        f.writelines(f"missing/{i:07d}.jpg\n" for i in range(1, ROWS + 1))
    return manifest


@pytest.mark.slow
@pytest.mark.parametrize("run", [1, 2, 3])
def test_100k_missing_files_manifest_stays_under_1_5_gb_and_accounts_for_every_row(
        tmp_path, missing_manifest, run):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "synthsieve.cli", "-q", "audit", str(missing_manifest),
           "--out", str(out), "--backend", "none"]
    proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True,
                          text=True, timeout=600)
    code, peak_mb = (int(v) for v in proc.stdout.split())
    print(f"run {run}: exit {code}, peak RSS {peak_mb} MB")
    assert code == 4, proc.stderr[-2000:]  # every input failed: a scheduler must see it
    assert peak_mb < PEAK_RSS_LIMIT_MB
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == ROWS and summary["errors"] == ROWS
    assert summary["errors_by_type"] == {"not_found": ROWS}
    assert summary["accounted_for"] is True
    assert summary["top_errors"][0]["count"] == ROWS
    assert "{uri}" in summary["top_errors"][0]["message"]


def test_10k_missing_files_in_process_each_end_as_one_not_found_row(tmp_path):
    """The same dead-link manifest at a tenth of the size, in this process: the everyday
    loop's check that every row of a large manifest is accounted for."""
    from synthsieve.pipelines.audit import AuditConfig, run_audit

    manifest = tmp_path / "m.csv"
    rows = 10_000
    manifest.write_text("uri\n" + "".join(f"missing/{i:06d}.jpg\n" for i in range(rows)))
    summary = run_audit(AuditConfig(sources=[str(manifest)], out_dir=str(tmp_path / "out"),
                                    backend="none"))
    assert summary["inputs"] == rows == summary["errors"]
    assert summary["errors_by_type"] == {"not_found": rows}
    assert summary["accounted_for"] is True
