"""XMP packets: IPTC DigitalSourceType, photoshop:Credit and xmp:CreatorTool.

Parsed with defusedxml, which refuses DTDs, entity declarations and external references, so a
billion-laughs packet is a warning rather than gigabytes of memory; packets over MAX_BYTES
are not parsed at all.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from PIL import Image

from synthsieve.provenance.vocabulary import source_type_code

__all__ = ["FIELDS", "MAX_BYTES", "packet_of", "read_xmp"]

MAX_BYTES = 1024 * 1024
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
FIELDS = {
    "digital_source_type": "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType",
    "credit": "{http://ns.adobe.com/photoshop/1.0/}Credit",
    "creator_tool": "{http://ns.adobe.com/xap/1.0/}CreatorTool",
}


def packet_of(img: Image.Image) -> bytes | None:
    """The raw XMP packet Pillow found: JPEG APP1, PNG iTXt, WebP chunk, TIFF tag 700."""
    raw: Any = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
    if raw is None and hasattr(img, "tag_v2"):
        raw = img.tag_v2.get(700)
    if raw is None:
        return None
    return raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)


def _value(node: Element) -> str | None:
    """A property's text, whether plain or inside rdf:Alt/Seq/Bag/li, or rdf:resource."""
    resource = node.get(f"{{{_RDF}}}resource")
    if resource:
        return resource
    if node.text and node.text.strip():
        return node.text.strip()
    for li in node.iter(f"{{{_RDF}}}li"):
        if li.text and li.text.strip():
            return li.text.strip()
    return None


def read_xmp(packet: bytes | None) -> tuple[dict[str, Any] | None, list[str]]:
    """(the `xmp` column, or None when there is no packet or it names none of the fields;
    warnings)."""
    if not packet:
        return None, []
    if len(packet) > MAX_BYTES:
        return None, [f"xmp: packet of {len(packet)} bytes over the {MAX_BYTES}-byte limit, "
                      "not parsed"]
    # Cut after the root's end tag: what follows (padding, the closing <?xpacket?>, stray
    # bytes) is not always well-formed. The prolog is kept so that a DTD reaches defusedxml
    # and is refused.
    end = -1
    for tag in (b"</x:xmpmeta>", b"</x:xapmeta>", b"</rdf:RDF>"):
        found = packet.rfind(tag)
        if found >= 0:
            end = found + len(tag)
            break
    first = packet.find(b"<")
    body = packet[max(first, 0):end if end > first else len(packet)]
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as e:
        return None, [f"xmp: refused ({type(e).__name__}): DTDs and entities are not parsed"]
    except Exception as e:  # ParseError and friends
        return None, [f"xmp: unparseable packet: {str(e)[:200]}"]
    found: dict[str, str | None] = dict.fromkeys(FIELDS)
    for name, tag in FIELDS.items():
        for desc in root.iter(f"{{{_RDF}}}Description"):
            attr = desc.get(tag)
            if attr:
                found[name] = attr.strip()
                break
        if found[name] is None:
            node = next(root.iter(tag), None)
            if node is not None:
                found[name] = _value(node)
    if not any(found.values()):
        return None, []
    column = {k: (v[:300] if v else None) for k, v in found.items()}
    column["digital_source_type"] = source_type_code(column["digital_source_type"])
    return column, []
