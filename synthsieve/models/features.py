"""What the bundled model reads from the CLIP encoder besides its final embedding.

A linear probe on CLIP's last embedding sees what the encoder was trained to keep (the
image's meaning); the traces generators leave are lower-level and fade by the last block.
So the model also reads the encoder's residual stream after each transformer block: the CLS
token and the mean of the patch tokens (RINE, ECCV 2024, probes intermediate CLS tokens the
same way). Both come from the one forward pass the embedding needs.

The same graph surgery serves the build script (which reads every block to choose from) and
the assembled model (which reads only the blocks the head uses), so what was fitted is what
runs.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

__all__ = [
    "N_BLOCKS", "WIDTH", "FeatureGraphError", "add_token_features", "block_outputs",
    "cls_name", "feature_model", "patch_mean_name",
]

N_BLOCKS = 12
WIDTH = 768
# The residual stream after block i is the output of the node with this name.
_BLOCK_NODE = "/vision_model/encoder/layers.{i}/Add_1"
# token 0 is CLS, 1..196 are the 14x14 patches of a 224x224 input
_CLS_INDEX = "feat_cls_index"
_PATCH_START = "feat_patch_start"
_PATCH_END = "feat_patch_end"
_TOKEN_AXIS = "feat_token_axis"


class FeatureGraphError(ValueError):
    pass


def block_outputs(graph: onnx.GraphProto) -> list[str]:
    """The residual-stream tensor ([batch, 197, 768]) after each of the 12 blocks."""
    by_name = {n.name: n for n in graph.node}
    names = []
    for i in range(N_BLOCKS):
        node = by_name.get(_BLOCK_NODE.format(i=i))
        if node is None:
            raise FeatureGraphError(f"encoder graph has no node {_BLOCK_NODE.format(i=i)}: "
                                    "not the pinned CLIP ViT-B/16 export")
        names.append(node.output[0])
    return names


def cls_name(block: int) -> str:
    return f"block{block}_cls"


def patch_mean_name(block: int) -> str:
    return f"block{block}_patch_mean"


def add_token_features(model: onnx.ModelProto, blocks: list[int]) -> list[str]:
    """Adds, for each block, its CLS token and the mean of its patch tokens ([batch, 768]
    each) to the graph, named by cls_name / patch_mean_name. Returns the new tensor names in
    the order (block0 cls, block0 patch mean, block1 cls, ...). The graph's outputs are not
    changed: the caller decides which tensors leave the graph."""
    graph = model.graph
    hidden = block_outputs(graph)
    have = {i.name for i in graph.initializer}
    if _CLS_INDEX not in have:
        graph.initializer.extend([
            helper.make_tensor(_CLS_INDEX, TensorProto.INT64, [], [0]),
            helper.make_tensor(_PATCH_START, TensorProto.INT64, [1], [1]),
            helper.make_tensor(_PATCH_END, TensorProto.INT64, [1], [1 << 30]),
            helper.make_tensor(_TOKEN_AXIS, TensorProto.INT64, [1], [1]),
        ])
    names = []
    for b in blocks:
        cls, mean = cls_name(b), patch_mean_name(b)
        graph.node.extend([
            helper.make_node("Gather", [hidden[b], _CLS_INDEX], [cls], axis=1,
                             name=f"feat_{cls}"),
            helper.make_node("Slice", [hidden[b], _PATCH_START, _PATCH_END, _TOKEN_AXIS],
                             [f"block{b}_patches"], name=f"feat_block{b}_patches"),
            helper.make_node("ReduceMean", [f"block{b}_patches"], [mean], axes=[1],
                             keepdims=0, name=f"feat_{mean}"),
        ])
        names += [cls, mean]
    return names


def feature_model(encoder: onnx.ModelProto, embedding_output: str) -> onnx.ModelProto:
    """The encoder with every block's CLS and patch-mean tokens as outputs next to its
    embedding: what the build script embeds the training images with."""
    model = onnx.ModelProto.FromString(encoder.SerializeToString())
    names = add_token_features(model, list(range(N_BLOCKS)))
    del model.graph.output[:]
    model.graph.output.extend(
        [helper.make_tensor_value_info(embedding_output, TensorProto.FLOAT, ["batch", 512])]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", WIDTH])
           for n in names])
    onnx.checker.check_model(model)
    return model
