"""Names found in metadata (C2PA claim generators and software agents, XMP creator tools, EXIF
Software, checkpoint names) -> the source taxonomy.

Table-driven: the first rule whose pattern is found in the lowercased name wins, so more
specific rules (SDXL before SD, GPT-4o before DALL-E) come first. A name that matches no rule
names no generator (None): plenty of metadata names an editor or a camera, not a generator.
"""

from __future__ import annotations

import re

from synthsieve.schema import SOURCE_SET

__all__ = ["RULES", "source_from_name"]

# (pattern, taxonomy label). Patterns are regular expressions over the lowercased name.
RULES: tuple[tuple[str, str], ...] = (
    (r"firefly", "adobefirefly"),
    (r"gpt-?4o|gpt-image|chatgpt|openai.*4o|4o image", "4o"),
    (r"dall[\W_]?e|openai", "dalle"),
    (r"midjourney|\bniji\b", "midjourney"),
    (r"imagen[\W_]?4", "imagen4"),
    (r"imagen|gemini|nano[\W_]?banana", "imagen"),
    (r"ideogram", "ideogram"),
    (r"\bflux|black[\W_]?forest", "flux"),
    (r"stable[\W_]?cascade|w[uü]rstchen", "stablecascade"),
    (r"sdxl[\W_]?inpaint|sd_xl.*inpaint", "sdxlinpaint"),
    (r"sdxl|sd_xl|sd[\W_]?xl|stable[\W_]?diffusion[\W_]?xl|pony[\W_]?diffusion|illustrious"
     r"|juggernaut[\W_]?xl|realvisxl|playground[\W_]?v2", "stablediffusionxl"),
    (r"stable[\W_]?diffusion.*inpaint|sd[\W_]?1\.?5?[\W_]inpaint", "stablediffusioninpaint"),
    (r"stable[\W_]?diffusion|\bsd[\W_]?[123](\.\d)?\b|\bsd[\W_]?3\.5|v1-5-pruned|v2-1_|"
     r"stability[\W_]?ai|dreamshaper|realistic[\W_]?vision|anything[\W_]?v\d", "stablediffusion"),
    (r"\blcm\b|latent[\W_]?consistency", "lcm"),
    (r"pixart", "pixart"),
    (r"kandinsky", "kandinsky"),
    (r"deepfloyd|\bif-i", "deepfloyd"),
    (r"bing[\W_]?image", "bingimagecreator"),
    (r"leonardo", "leonardo"),
    (r"recraft", "recraft"),
    (r"\bgrok\b", "grok"),
    (r"hunyuan", "hunyuan"),
    (r"\bsana\b", "sana"),
    (r"\bomnigen", "omnigen"),
    (r"janus", "janus"),
    (r"\bemu3", "emu3"),
    (r"amazon[\W_]?titan|titan[\W_]?image", "titan"),
    (r"\bglide\b", "glide"),
    (r"\bgan\b|stylegan|biggan", "gan"),
)
_COMPILED = tuple((re.compile(p), label) for p, label in RULES)
for _p, _label in RULES:  # a typo in the table must fail at import, not emit a new label
    assert _label in SOURCE_SET, _label


def source_from_name(name: str | None) -> str | None:
    """The generator a piece of metadata names, as a taxonomy label, or None."""
    if not name:
        return None
    text = str(name).lower()
    for pattern, label in _COMPILED:
        if pattern.search(text):
            return label
    return None
