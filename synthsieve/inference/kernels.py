"""Which integer kernels ONNX Runtime runs a quantised model with on this CPU.

The bundled model ships its INT8 weights stored as UINT8 (precision.unsigned_weights), so
that ONNX Runtime uses its UINT8 x UINT8 kernels: they widen before multiplying and are
exact on every x86 CPU. The signed form (UINT8 activations x INT8 weights, "U8S8") is what
the encoder was quantised as and has faster kernels, but on a CPU without VNNI they add
pairs of products in saturating 16-bit lanes, so the result depends on the CPU. With VNNI
(AVX512-VNNI, AVX-VNNI) or AMX the U8S8 products are accumulated in 32 bits, exactly; there
the signed graph computes the same numbers faster. (The float parts of the graph are made
CPU-independent by precision.portable_softmax; docs/numerics.md has the measurements.)

So a session is given the signed graph only where the CPU has those instructions. The
signed graph is derived from the shipped one at install time (`synthsieve fetch-model`
writes it beside the model as `model.u8s8.onnx`, see write_signed_graph) or, when that file
is missing or older than the model, in memory when the model is loaded: a parse and rewrite
of the whole graph that every worker process would otherwise pay at start.
`SYNTHSIEVE_INT8_KERNEL` overrides the choice: `u8u8` forces the exact-everywhere kernels
(what an AVX2-only CPU gets), `u8s8` forces the signed ones (to see what they do on a CPU
without VNNI), `auto` is the default.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from synthsieve.inference.precision import integer_weight_nodes, shift_weights

__all__ = ["ENV", "U8S8", "U8U8", "choose_kernel", "cpu_flags", "cpu_model", "forced_kernel",
           "has_exact_u8s8", "kernel_report", "signed_graph_file", "signed_weights",
           "uint8_weight_nodes", "write_signed_graph"]

ENV = "SYNTHSIEVE_INT8_KERNEL"
U8U8, U8S8 = "u8u8", "u8s8"
# Instructions whose U8S8 dot products accumulate in 32 bits, without saturation.
EXACT_U8S8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# The flags that decide which kernels ONNX Runtime dispatches for this model: the integer
# products (above) and the vector width of its float kernels.
REPORTED_FLAGS = EXACT_U8S8_FLAGS | {"avx2", "fma", "avx512f", "avx512bw"}
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo(cpuinfo: Path) -> dict[str, str]:
    """The first value of each `key : value` of /proc/cpuinfo (Linux x86); empty when it
    cannot be read."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return {}
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags (Linux x86), or none when they cannot be read."""
    return frozenset(_cpuinfo(cpuinfo).get("flags", "").split())


def cpu_model(cpuinfo: Path = CPUINFO) -> str | None:
    """The CPU's model name (Linux x86), or None."""
    return _cpuinfo(cpuinfo).get("model name")


def has_exact_u8s8(flags: frozenset[str] | None = None) -> bool:
    """True when this CPU computes U8S8 integer products exactly (VNNI or AMX)."""
    return bool(EXACT_U8S8_FLAGS & (cpu_flags() if flags is None else flags))


def forced_kernel(environ: Mapping[str, str] | None = None) -> str | None:
    """The kernel SYNTHSIEVE_INT8_KERNEL forces (u8s8 or u8u8), or None for auto.

    Raises:
      ValueError: SYNTHSIEVE_INT8_KERNEL holds something else.
    """
    wanted = (os.environ if environ is None else environ).get(ENV, "auto").strip().lower()
    if wanted in (U8U8, U8S8):
        return wanted
    if wanted not in ("", "auto"):
        raise ValueError(f"{ENV}={wanted!r}: use auto, {U8S8} or {U8U8}")
    return None


def choose_kernel(environ: Mapping[str, str] | None = None,
                  flags: frozenset[str] | None = None) -> str:
    """u8s8 or u8u8, by SYNTHSIEVE_INT8_KERNEL (auto, u8s8, u8u8) and the CPU.

    Raises:
      ValueError: SYNTHSIEVE_INT8_KERNEL holds something else.
    """
    return forced_kernel(environ) or (U8S8 if has_exact_u8s8(flags) else U8U8)


def kernel_report(environ: Mapping[str, str] | None = None,
                  cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """What a run records of the integer kernels (summary.json `int8_kernel`, the model
    card): the choice, what made it, and the CPU, so that runs on different machines can be
    compared knowingly."""
    fields = _cpuinfo(cpuinfo)
    flags = frozenset(fields.get("flags", "").split())
    forced = forced_kernel(environ)
    return {"kernel": forced or (U8S8 if has_exact_u8s8(flags) else U8U8),
            "decided_by": f"{ENV}={forced}" if forced else "cpu_flags",
            "cpu": fields.get("model name"),
            "cpu_flags": sorted(REPORTED_FLAGS & flags)}


def uint8_weight_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The integer matrix products whose constant weights are stored as UINT8."""
    return integer_weight_nodes(model, np.uint8)


def signed_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with its UINT8 weights stored as INT8 (-128, zero point -128): the
    inverse of precision.unsigned_weights. A weight without a constant zero point is left
    as it is (its zero is 0, which has no INT8 counterpart 128 below it)."""
    return shift_weights(model, np.uint8, np.int8, missing_zero="keep")


def _signed_paths(model_path: Path) -> tuple[Path, Path]:
    """The derived graph beside the model, and the stamp saying which model it came from."""
    stem = model_path.with_suffix("")
    return stem.with_suffix(f".{U8S8}.onnx"), stem.with_suffix(f".{U8S8}.json")


def _stamp(model_path: Path) -> dict[str, int]:
    st = model_path.stat()
    return {"source_bytes": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def write_signed_graph(model_path: Path) -> Path | None:
    """Writes the signed graph of `model_path` beside it, with a stamp of the model it was
    derived from; None when the model has no UINT8 weights (nothing to derive)."""
    model = onnx.load(str(model_path))
    if not uint8_weight_nodes(model):
        return None
    graph, stamp = _signed_paths(model_path)
    part = graph.with_suffix(".onnx.part")
    part.write_bytes(signed_weights(model).SerializeToString())
    os.replace(part, graph)
    stamp.write_text(json.dumps(_stamp(model_path)))
    return graph


def signed_graph_file(model_path: Path) -> Path | None:
    """The signed graph written by write_signed_graph, when it was derived from the model
    file as it is now (same size and modification time); else None."""
    graph, stamp = _signed_paths(model_path)
    try:
        fresh = json.loads(stamp.read_text()) == _stamp(model_path) and graph.is_file()
    except (OSError, ValueError):
        return None
    return graph if fresh else None
