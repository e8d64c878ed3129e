"""`synthsieve scrub`: a policy turns an audit into kept and removed manifests, and --apply
copies or moves the removed objects to quarantine, on local files and on S3 (moto_server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus import noise_png
from servers import CLOUD_ENV, s3_server

from synthsieve.cli import main
from synthsieve.pipelines.scrub import Policy, PolicyError, decide, quarantine_path

PARAMS = "a cat\nSteps: 20, Sampler: Euler, Model: sd_xl_base_1.0, Version: v1.9.4"


def corpus_files() -> dict[str, bytes]:
    files = {f"gen{i}.png": noise_png(i, PARAMS) for i in range(3)}
    files.update({f"plain{i}.png": noise_png(10 + i) for i in range(4)})
    files["broken.png"] = b"\x89PNG\r\n\x1a\n broken"
    return files


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


SCORED = {"image_id": "a", "uri": "/x/a.png", "ai_generated": 0.1,
          "verdict": "not_ai_generated", "evidence_verdict": "not_ai_generated"}


@pytest.mark.parametrize("row,policy,expected", [
    (SCORED, Policy(), ("keep", "evidence_verdict not_ai_generated")),
    ({**SCORED, "evidence_verdict": "ai_generated"}, Policy(),
     ("remove", "evidence_verdict ai_generated")),
    ({**SCORED, "evidence_verdict": "ai_generated"}, Policy(verdict_column="verdict"),
     ("keep", "verdict not_ai_generated")),
    ({**SCORED, "c2pa": {"validation_state": "valid",
                         "digital_source_type": "trainedAlgorithmicMedia"}},
     Policy(verdict_column="verdict"), ("remove", "c2pa valid: trainedAlgorithmicMedia")),
    ({**SCORED, "c2pa": {"validation_state": "invalid",
                         "digital_source_type": "trainedAlgorithmicMedia"}},
     Policy(verdict_column="verdict"), ("keep", "verdict not_ai_generated")),
    ({**SCORED, "watermark": {"scheme": "sdxl"}}, Policy(), ("remove", "sdxl watermark")),
    ({**SCORED, "watermark": {"scheme": "none"}}, Policy(), ("keep",
                                                             "evidence_verdict not_ai_generated")),
    ({**SCORED, "provenance_source": "midjourney"}, Policy(remove_sources=("midjourney",)),
     ("remove", "provenance_source midjourney")),
    ({**SCORED, "ai_generated": 0.6}, Policy(min_ai_generated=0.5),
     ("remove", "ai_generated 0.600 >= 0.5")),
    ({**SCORED, "evidence_verdict": "inconclusive"},
     Policy(remove_verdicts=("ai_generated", "inconclusive")),
     ("remove", "evidence_verdict inconclusive")),
    ({"image_id": "e", "uri": "/x/e.png", "stage": "decode", "error_type": "corrupt"},
     Policy(), ("keep", "not scored: decode/corrupt")),
    ({"image_id": "e", "uri": "/x/e.png", "stage": "decode", "error_type": "corrupt"},
     Policy(errors="remove"), ("remove", "not scored: decode/corrupt")),
])
def test_policy_decides_each_image(row, policy, expected):
    assert decide(row, policy) == expected


def test_policy_yaml_is_checked():
    policy = Policy.from_yaml("remove_sources: [flux]\nerrors: remove\nmin_ai_generated: 0.9\n")
    assert policy.remove_sources == ("flux",) and policy.errors == "remove"
    for bad in ("remov_sources: [x]", "errors: delete", "verdict_column: source",
                "remove_evidence: [gut_feeling]", "- a list"):
        with pytest.raises(PolicyError):
            Policy.from_yaml(bad)


def test_quarantine_paths_never_escape_the_destination():
    assert quarantine_path("s3://b/imgs/x.jpg", "/q") == "/q/s3/b/imgs/x.jpg"
    assert quarantine_path("/data/../../etc/passwd", "/q") == "/q/file/data/etc/passwd"
    assert quarantine_path("gs://b/../../../x", "s3://q/prefix") == "s3://q/prefix/gs/b/x"
    with pytest.raises(ValueError):
        quarantine_path("s3://", "/q")


def test_scrub_local_dry_run_then_move_then_rerun_is_idempotent(tmp_path, tiny_model):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in corpus_files().items():
        (corpus / name).write_bytes(data)
    audit = tmp_path / "audit"
    assert main(["-q", "audit", str(corpus), "--out", str(audit), "--model",
                 str(tiny_model)]) == 0

    dry = tmp_path / "dry"
    assert main(["-q", "scrub", str(audit), "--out", str(dry)]) == 0
    removed = {Path(r["uri"]).name: r for r in read_jsonl(dry / "removed.jsonl")}
    kept = {Path(r["uri"]).name: r for r in read_jsonl(dry / "kept.jsonl")}
    assert {"gen0.png", "gen1.png", "gen2.png"} <= set(removed)
    assert removed["gen0.png"]["reason"] == "generation parameters from a1111"
    assert kept["broken.png"]["reason"].startswith("not scored: decode/")
    # the figures it was decided on travel with the reason
    assert removed["gen0.png"]["evidence_verdict"] == "ai_generated"
    assert 0.0 <= removed["gen0.png"]["ai_generated"] <= 1.0
    assert removed["gen0.png"]["verdict"] in ("ai_generated", "inconclusive", "real")
    assert kept["broken.png"]["ai_generated"] is None and kept["broken.png"]["verdict"] is None
    assert set(removed) | set(kept) == set(corpus_files())
    assert all((corpus / n).exists() for n in corpus_files())  # a dry run touches nothing

    quarantine = tmp_path / "quarantine"
    out = tmp_path / "moved"
    assert main(["-q", "scrub", str(audit), "--out", str(out), "--apply", "move", "--to",
                 str(quarantine)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["actions"] == {"moved": len(removed)}
    for name in removed:
        assert not (corpus / name).exists()
        assert (quarantine / "file" / str(corpus).lstrip("/") / name).read_bytes() == \
            corpus_files()[name]
    assert all((corpus / n).exists() for n in kept)

    again = tmp_path / "again"
    assert main(["-q", "scrub", str(audit), "--out", str(again), "--apply", "move", "--to",
                 str(quarantine)]) == 0
    assert json.loads((again / "summary.json").read_text())["actions"] == {
        "done_before": len(removed)}


@pytest.mark.slow
def test_scrub_copies_removed_objects_to_quarantine_on_s3(tmp_path, monkeypatch, tiny_model):
    for k, v in CLOUD_ENV.items():
        monkeypatch.setenv(k, v)
    with s3_server() as s3:
        c = s3.client()
        c.create_bucket(Bucket="corpus")
        c.create_bucket(Bucket="quarantine")
        for name, data in corpus_files().items():
            c.put_object(Bucket="corpus", Key=f"imgs/{name}", Body=data)
        assert main(["-q", "audit", "s3://corpus/imgs/", "--out", "s3://corpus/audit",
                     "--model", str(tiny_model), *s3.beam_args]) == 0
        out = tmp_path / "scrub"
        for _ in range(2):  # the second run finds everything already copied
            assert main(["-q", "scrub", "s3://corpus/audit", "--out", str(out), "--apply",
                         "copy", "--to", "s3://quarantine/held", *s3.beam_args]) == 0
        actions = read_jsonl(out / "copy.jsonl")
        assert sorted(a["status"] for a in actions) == ["done_before"] * 3
        keys = sorted(o["Key"] for o in c.list_objects_v2(
            Bucket="quarantine")["Contents"])
        assert keys == [f"held/s3/corpus/imgs/gen{i}.png" for i in range(3)]
        assert len(c.list_objects_v2(Bucket="corpus", Prefix="imgs/")["Contents"]) == 8
