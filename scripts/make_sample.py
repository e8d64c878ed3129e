"""Writes the bundled sample under sample/ from ../shared/data (re-run to regenerate).

A few small real files whose licences allow redistribution (listed in sample/README.md):
three photographs, a human-made game illustration, an AI image that still carries its
ComfyUI generation text, and an AI image signed with C2PA content credentials; plus two
broken files, so that a first run also shows error rows (README.md, a text file in the
folder, is the third). Each file's source is checked by
sha256 against its SOURCES file before it is copied.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from pathlib import Path

from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the C2PA signing helper the tests use

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"

# sample name -> (SOURCES file, file in it, what is done to it)
PICKS = {
    "photo_camera_exif.jpg": ("SOURCES.csv",
                              "real/metadata-extractor-images__jpg_FujiFilm_FinePix1400Zoom__1_.jpg",
                              "copied byte for byte (camera EXIF kept)"),
    "photo_lake.jpg": ("diverse/SOURCES-photo.csv",
                       "photo/libjxl_testdata__external_wesaturate_500px_cvo9xd_keong_macan_srgb8.jpg",
                       "copied byte for byte"),
    "photo_tulips.webp": ("diverse/SOURCES-photo.csv",
                          "photo/libjxl_testdata__external_wesaturate_500px_tmshre_riaphotographs_srgb8.jpg",
                          "re-encoded as WebP q85"),
    "illustration_isometric_game.jpg": (
        "diverse/SOURCES-art.csv",
        "art/godotengine_godot-demo-projects__2d_isometric_screenshots_isometric.jpg",
        "re-encoded as JPEG q85"),
    "ai_sd_comfyui.png": ("SOURCES.csv",
                          "ai/ComfyUI_examples__hypernetworks_hypernetwork_example_output.png",
                          "downscaled to 256x256; its prompt and workflow text chunks kept"),
    "ai_flux_c2pa.jpg": ("diverse/SOURCES-ai.csv",
                         "ai/stable-diffusion.cpp__assets_flux_flux1-schnell-q8_0.jpg",
                         "signed with a C2PA manifest (c2pa.created, trainedAlgorithmicMedia) "
                         "by a self-signed certificate made for the sample"),
}


def source_row(data: Path, sources: str, file: str) -> dict:
    prefix = "diverse/" if sources.startswith("diverse/") else ""
    with open(data / sources, newline="") as f:
        for row in csv.DictReader(f):
            if row["file"] == file:
                got = hashlib.sha256((data / prefix / file).read_bytes()).hexdigest()
                if got != row["sha256"]:
                    raise SystemExit(f"{file}: sha256 {got} does not match {sources}")
                return row
    raise SystemExit(f"{file} is not in {sources}")


def make(name: str, blob: bytes) -> bytes:
    img = Image.open(io.BytesIO(blob))
    if name == "photo_tulips.webp":
        out = io.BytesIO()
        img.convert("RGB").save(out, "WEBP", quality=85)
        return out.getvalue()
    if name == "illustration_isometric_game.jpg":
        out = io.BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=85)
        return out.getvalue()
    if name == "ai_sd_comfyui.png":
        info = PngImagePlugin.PngInfo()
        for key, value in img.text.items():
            info.add_text(key, value, zip=True)
        out = io.BytesIO()
        img.convert("RGB").resize((256, 256), Image.Resampling.LANCZOS).save(
            out, "PNG", pnginfo=info, optimize=True)
        return out.getvalue()
    if name == "ai_flux_c2pa.jpg":
        from c2pa_certs import make_chain, sign

        chain = make_chain(days=3650, organisation="synthsieve sample (self-signed)")
        return sign(blob, "image/jpeg", chain, [{
            "action": "c2pa.created", "digitalSourceType": IPTC + "trainedAlgorithmicMedia",
            "softwareAgent": "FLUX.1 [schnell] via stable-diffusion.cpp"}],
            generator="synthsieve make_sample")
    return blob


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "sample"))
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    if not (data / "SOURCES.csv").is_file():
        print(f"make_sample: {data} has no SOURCES.csv; pass --data ../shared/data",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.name != "README.md":
            old.unlink()
    for name, (sources, file, _how) in PICKS.items():
        source_row(data, sources, file)
        prefix = "diverse/" if sources.startswith("diverse/") else ""
        (out / name).write_bytes(make(name, (data / prefix / file).read_bytes()))
    photo = (out / "photo_lake.jpg").read_bytes()
    (out / "broken_truncated.jpg").write_bytes(photo[: len(photo) // 3])
    (out / "empty.png").write_bytes(b"")
    for p in sorted(out.iterdir()):
        print(f"{p.name:36s} {p.stat().st_size:>7,d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
