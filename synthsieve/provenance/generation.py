"""Generation parameters that image tools write into the file: which tool, which checkpoint,
whether a prompt is there. Prompts are read only to know they exist unless --keep-prompts.

Where each tool writes (PNG text chunks unless noted):
- AUTOMATIC1111, Forge, SD.Next: `parameters` ("prompt\\nNegative prompt: ...\\nSteps: ...,
  Model: name, Version: ..."); in JPEG/WebP the same text in EXIF UserComment.
- Fooocus: `parameters` as JSON with `fooocus_scheme`, or the A1111 form with "Fooocus" in
  its Version.
- ComfyUI: `prompt` (the executed node graph, JSON) and `workflow` (the editor's graph).
- NovelAI: `Software` = "NovelAI", `Source` (the model), `Comment` (JSON with the prompt).
- InvokeAI: `invokeai_metadata` (JSON), older `sd-metadata` (JSON) and `Dream`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_PROMPT_CHARS", "MAX_VALUE_CHARS", "parse_a1111", "parse_comfyui", "parse_fooocus",
    "parse_invokeai", "parse_novelai", "read_generation",
]

MAX_VALUE_CHARS = 1_000_000  # a larger text chunk is not parsed (warning)
MAX_PROMPT_CHARS = 10_000  # what --keep-prompts stores
_KV = re.compile(r'\s*([\w][\w \-/()]*):\s*("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)')


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _prompt(text: str | None, keep: bool) -> tuple[bool, str | None]:
    present = bool(text and text.strip())
    return present, (text.strip()[:MAX_PROMPT_CHARS] if keep and present else None)


def parse_a1111(text: str, keep: bool) -> dict[str, Any]:
    """The A1111 `parameters` text (shared by Forge, SD.Next and Fooocus's A1111 mode)."""
    lines = text.strip().split("\n")
    settings = lines[-1] if len(lines) > 1 or "Steps:" in lines[-1] else ""
    fields = {m.group(1).strip(): m.group(2).strip().strip('"') for m in _KV.finditer(settings)}
    body = "\n".join(lines[:-1]) if settings else text
    prompt = body.split("\nNegative prompt:", 1)[0]
    if body.startswith("Negative prompt:"):
        prompt = ""
    version = fields.get("Version", "")
    if fields.get("App", "").lower().startswith("sd.next"):
        tool = "sdnext"
    elif "fooocus" in version.lower():
        tool = "fooocus"
    elif re.match(r"f\d", version):
        tool = "forge"
    else:
        tool = "a1111"
    has_prompt, kept = _prompt(prompt, keep)
    return {"tool": tool, "model_name": fields.get("Model") or None, "has_prompt": has_prompt,
            "prompt": kept}


def parse_fooocus(doc: dict[str, Any], keep: bool) -> dict[str, Any]:
    prompt = doc.get("prompt") or doc.get("Prompt")
    model = doc.get("base_model") or doc.get("Base Model")
    has_prompt, kept = _prompt(prompt if isinstance(prompt, str) else None, keep)
    return {"tool": "fooocus", "model_name": str(model) if model else None,
            "has_prompt": has_prompt, "prompt": kept}


def _comfy_nodes(doc: Any) -> list[tuple[str, dict[str, Any]]]:
    """(class_type, inputs) for an API-format `prompt` or an editor-format `workflow`."""
    nodes: list[tuple[str, dict[str, Any]]] = []
    if isinstance(doc, dict) and isinstance(doc.get("nodes"), list):  # workflow
        for node in doc["nodes"]:
            if not isinstance(node, dict):
                continue
            values = node.get("widgets_values")
            first = values[0] if isinstance(values, list) and values else None
            kind = str(node.get("type", ""))
            key = "text" if "TextEncode" in kind else "ckpt_name"
            nodes.append((kind, {key: first} if isinstance(first, str) else {}))
    elif isinstance(doc, dict):  # prompt: {id: {class_type, inputs}}
        for node in doc.values():
            if isinstance(node, dict):
                inputs = node.get("inputs")
                nodes.append((str(node.get("class_type", "")),
                              inputs if isinstance(inputs, dict) else {}))
    return nodes


def parse_comfyui(prompt_json: str | None, workflow_json: str | None,
                  keep: bool) -> dict[str, Any] | None:
    doc = _json(prompt_json) if prompt_json else None
    if doc is None and workflow_json:
        doc = _json(workflow_json)
    nodes = _comfy_nodes(doc)
    if not nodes:
        return None
    model = None
    texts: list[str] = []
    for kind, inputs in nodes:
        if model is None and "Loader" in kind:
            for key in ("ckpt_name", "unet_name", "model_name"):
                if isinstance(inputs.get(key), str):
                    model = inputs[key]
                    break
        if "TextEncode" in kind:
            texts.extend(v for k, v in inputs.items()
                         if k.startswith("text") and isinstance(v, str) and v.strip())
    has_prompt, kept = _prompt(texts[0] if texts else None, keep)
    return {"tool": "comfyui", "model_name": model, "has_prompt": has_prompt, "prompt": kept}


def parse_novelai(texts: Mapping[str, str], keep: bool) -> dict[str, Any]:
    comment = _json(texts.get("Comment", "")) or {}
    prompt = comment.get("prompt") if isinstance(comment, dict) else None
    if not isinstance(prompt, str):
        prompt = texts.get("Description")
    has_prompt, kept = _prompt(prompt, keep)
    return {"tool": "novelai", "model_name": texts.get("Source") or None,
            "has_prompt": has_prompt, "prompt": kept}


def parse_invokeai(texts: Mapping[str, str], keep: bool) -> dict[str, Any] | None:
    if "invokeai_metadata" in texts:
        doc = _json(texts["invokeai_metadata"])
        if not isinstance(doc, dict):
            return None
        model = doc.get("model")
        name = (model.get("model_name") or model.get("name")) if isinstance(model, dict) \
            else model
        prompt = doc.get("positive_prompt")
    elif "sd-metadata" in texts:
        doc = _json(texts["sd-metadata"])
        if not isinstance(doc, dict):
            return None
        name = doc.get("model_weights")
        image = doc.get("image") if isinstance(doc.get("image"), dict) else {}
        prompt = image.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            prompt = prompt[0].get("prompt")
    else:  # "Dream": '"a prompt" -s 50 -S 42 ...'
        match = re.match(r'\s*"((?:\\.|[^"\\])*)"', texts["Dream"])
        name, prompt = None, match.group(1) if match else None
    has_prompt, kept = _prompt(prompt if isinstance(prompt, str) else None, keep)
    return {"tool": "invokeai", "model_name": str(name) if name else None,
            "has_prompt": has_prompt, "prompt": kept}


def read_generation(texts: Mapping[str, str], user_comment: str | None,
                    keep_prompts: bool = False) -> tuple[dict[str, Any] | None, list[str]]:
    """(the `generation_params` column or None, warnings) from a file's text chunks and
    EXIF UserComment."""
    warnings: list[str] = []
    usable: dict[str, str] = {}
    for key, value in texts.items():
        if not isinstance(value, str):
            continue
        if len(value) > MAX_VALUE_CHARS:
            warnings.append(f"text chunk {key[:40]!r} of {len(value)} characters over the "
                            f"{MAX_VALUE_CHARS}-character limit, not parsed")
            continue
        usable[key] = value
    if user_comment and len(user_comment) <= MAX_VALUE_CHARS:
        usable.setdefault("parameters", user_comment)
    column: dict[str, Any] | None = None
    try:
        params = usable.get("parameters")
        if "prompt" in usable or "workflow" in usable:
            column = parse_comfyui(usable.get("prompt"), usable.get("workflow"), keep_prompts)
            if column is None:
                warnings.append("generation params: unreadable ComfyUI prompt/workflow JSON")
        if column is None and params is not None:
            doc = _json(params) if params.lstrip().startswith("{") else None
            if isinstance(doc, dict):
                column = parse_fooocus(doc, keep_prompts)
            elif "Steps:" in params or "Negative prompt:" in params:
                column = parse_a1111(params, keep_prompts)
        if column is None and (usable.get("Software", "").startswith("NovelAI")
                               or usable.get("Source", "").startswith("NovelAI")):
            column = parse_novelai(usable, keep_prompts)
        if column is None and {"invokeai_metadata", "sd-metadata", "Dream"} & usable.keys():
            column = parse_invokeai(usable, keep_prompts)
    except Exception as e:  # a parser bug on odd input must not lose the image
        warnings.append(f"generation params: {type(e).__name__}: {str(e)[:200]}")
        column = None
    if column and column.get("model_name"):
        column["model_name"] = str(column["model_name"])[:300]
    return column, warnings
