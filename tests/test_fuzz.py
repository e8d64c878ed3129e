"""Mutated files of every format synthsieve decodes go through decode, provenance and
preprocessing: each ends as exactly one image or one error row, never an exception and
never a hang. SYNTHSIEVE_FUZZ_CASES sets how many (default 10,000, about 12 s here)."""

from __future__ import annotations

import os
import time

import pytest
from apache_beam.pvalue import TaggedOutput
from c2pa_certs import make_chain
from fuzzing import manifest_seeds, mutate, seed_files

from synthsieve.elements import ERRORS, FetchedImage, ImageInfo, ImageRef
from synthsieve.inference.spec import ModelSpec
from synthsieve.io.sources import _ReadManifest
from synthsieve.pipelines.audit import AuditConfig, run_audit
from synthsieve.provenance import ProvenanceOptions
from synthsieve.schema import STAGE_DECODE
from synthsieve.transforms.decode import _Decode

CASES = int(os.environ.get("SYNTHSIEVE_FUZZ_CASES", "10000"))
SLOW_S = 10.0  # a case slower than this counts as a hang


@pytest.fixture(scope="module")
def seeds():
    return seed_files(make_chain())


@pytest.mark.slow
def test_every_mutated_file_ends_as_one_image_or_one_decode_error(seeds, tiny_model):
    decode = _Decode(ModelSpec.load(tiny_model), 100_000_000, "fuzz", ProvenanceOptions())
    decode.setup()
    names = sorted(seeds)
    outcomes = {"image": 0, "error": 0}
    slowest = (0.0, None)
    for case in range(CASES):
        name = names[case % len(names)]
        data = mutate(seeds, name, case)
        item = FetchedImage(ImageRef(f"fuzz://{name}/{case}", f"{name}-{case}"), data, "x")
        started = time.perf_counter()
        try:
            out = list(decode.process(item))
        except Exception as e:  # noqa: BLE001 - the finding, with how to replay it
            pytest.fail(f"crash on mutate(seeds, {name!r}, {case}): {type(e).__name__}: {e}")
        took = time.perf_counter() - started
        slowest = max(slowest, (took, (name, case)), key=lambda t: t[0])
        assert len(out) == 1, (name, case, out)
        if isinstance(out[0], TaggedOutput):
            assert out[0].tag == ERRORS and out[0].value["stage"] == STAGE_DECODE
            assert out[0].value["error_type"] and out[0].value["message"]
            outcomes["error"] += 1
        else:
            info, pixels = out[0]
            assert isinstance(info, ImageInfo) and pixels.shape == (32, 32, 3)
            outcomes["image"] += 1
    assert slowest[0] < SLOW_S, f"hang: {slowest}"
    # both sides are exercised: many mutants still decode, many do not
    assert outcomes["image"] > CASES * 0.1 and outcomes["error"] > CASES * 0.1, outcomes
    print(f"fuzz: {CASES} cases, {outcomes}, slowest {slowest[0]:.2f} s {slowest[1]}")


def test_a_corpus_of_mutants_is_accounted_for_by_the_audit(seeds, tiny_model, tmp_path):
    corpus = tmp_path / "mutants"
    corpus.mkdir()
    names = sorted(seeds)
    for case in range(300):
        name = names[case % len(names)]
        (corpus / f"{case:04d}-{name}.bin").write_bytes(mutate(seeds, name, case))
    summary = run_audit(AuditConfig(sources=[str(corpus)], out_dir=str(tmp_path / "out"),
                                    model_dir=str(tiny_model)), [])
    assert summary["inputs"] == 300 == summary["scores"] + summary["errors"]
    assert summary["accounted_for"]


def test_mutated_manifests_become_refs_and_error_rows_never_an_exception(tmp_path):
    """Found by this test: 994 of 1,000 damaged Parquet manifests raised out of the reader
    (pyarrow's ArrowInvalid/OSError), which stops a whole run."""
    seeds = manifest_seeds()
    reader = _ReadManifest("fuzz")
    names = sorted(seeds)
    kinds = {"refs": 0, "errors": 0}
    for case in range(3000):
        name = names[case % len(names)]
        path = tmp_path / f"{case}.{name}"
        path.write_bytes(mutate(seeds, name, case))
        try:
            out = list(reader.process(str(path)))
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"crash on mutate(manifest_seeds(), {name!r}, {case}): "
                        f"{type(e).__name__}: {e}")
        for item in out:
            if isinstance(item, TaggedOutput):
                assert item.value["error_type"] in ("invalid_manifest", "invalid_manifest_row",
                                                    "invalid_uri")
                kinds["errors"] += 1
            else:
                assert isinstance(item, ImageRef)
                kinds["refs"] += 1
        path.unlink()
    assert kinds["refs"] and kinds["errors"], kinds


def test_mutated_c2pa_stores_xmp_packets_and_generator_text_are_read_without_raising(seeds):
    """The provenance readers on their own, whether or not the pixels would still decode."""
    import json

    from fuzzing import PARAMS, XMP

    from synthsieve.provenance.c2pa_manifest import C2paReader
    from synthsieve.provenance.generation import read_generation
    from synthsieve.provenance.xmp import read_xmp

    c2pa = C2paReader()
    states = set()
    for case in range(1500):
        name, fmt = (("c2pa_jpeg", "JPEG"), ("c2pa_png", "PNG"))[case % 2]
        column, warnings = c2pa.read(mutate(seeds, name, case), fmt)
        assert column is None or column["validation_state"], (name, case)
        states.add(column and column["validation_state"])
    assert {"unreadable", "invalid"} <= states, states
    comfy = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}},
                        "4": {"class_type": "CheckpointLoaderSimple",
                              "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}})
    texts = {"xmp": XMP, "parameters": PARAMS.encode(), "prompt": comfy.encode()}
    for case in range(3000):
        mutated = {k: mutate(texts, k, case) for k in texts}
        read_xmp(mutated["xmp"])
        read_generation({"parameters": mutated["parameters"].decode("utf-8", "replace"),
                         "prompt": mutated["prompt"].decode("utf-8", "replace")},
                        mutated["parameters"].decode("latin-1"))
