from __future__ import annotations

import numpy as np
import pytest
from corpus import (
    animated_gif,
    cmyk_jpeg,
    encode,
    exif_rotated_jpeg,
    palette_png_with_transparency,
    photo_like,
    png16,
    png_header_only,
)
from PIL import Image

from synthsieve.images import DecodeError, decode_image
from synthsieve.inference.preprocess import prepare
from synthsieve.inference.spec import ModelSpec

SIZE = (224, 224)


def spec(size: int = 224) -> ModelSpec:
    return ModelSpec.from_dict({
        "name": "t", "version": "1",
        "input": {"name": "x", "size": [size, size]},
        "preprocess": {"mean": [0, 0, 0], "std": [1, 1, 1]},
        "outputs": {"ai_generated": "p"},
        "thresholds": {"ai_generated": 0.5, "not_ai_generated": 0.5},
    }, "/nonexistent")


def test_large_jpeg_is_decoded_in_draft_mode_but_never_below_model_input():
    data = encode(photo_like(2000, 1500), "JPEG", quality=90)
    d = decode_image(data, SIZE, 10**9)
    assert (d.width, d.height) == (2000, 1500)  # original size is reported
    # 1/8 would give 250x188, below 224 on the short side, so 1/4 is the smallest scale.
    assert d.image.size == (500, 375)
    d4 = decode_image(data, (400, 400), 10**9)
    assert min(d4.image.size) >= 400  # ...and a larger input gets a smaller reduction


def test_exif_orientation_is_applied():
    d = decode_image(exif_rotated_jpeg(320, 240), (32, 32), 10**9)
    assert d.image.size[1] > d.image.size[0]  # 320x240 stored, shown rotated: portrait


def test_cmyk_jpeg_becomes_rgb_with_plausible_colours():
    d = decode_image(cmyk_jpeg(), (64, 64), 10**9)
    assert d.image.mode == "RGB"
    ref = np.asarray(photo_like(96, 64, seed=3), dtype=np.float32)
    got = np.asarray(d.image, dtype=np.float32)
    assert np.abs(got - ref).mean() < 40


def test_sixteen_bit_png_is_scaled_not_clipped():
    d = decode_image(png16(), (32, 32), 10**9)
    arr = np.asarray(d.image)
    assert d.image.mode == "RGB"
    assert arr.min() == 0 and arr.max() == 255
    assert 100 < arr.mean() < 155  # a linear ramp over the full range averages mid-grey


def test_palette_with_transparency_is_composited_on_white():
    d = decode_image(palette_png_with_transparency(), (32, 32), 10**9)
    arr = np.asarray(d.image)
    assert tuple(arr[10, 50]) == (255, 255, 255)  # transparent index -> white background
    assert tuple(arr[10, 10]) == (0, 0, 255)


def test_animated_gif_gives_first_frame_and_says_so():
    d = decode_image(animated_gif(), (32, 32), 10**9)
    assert d.image.mode == "RGB"
    assert any("animated" in w for w in d.warnings)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "I", "F", "P", "HSV"])
def test_every_mode_ends_as_rgb(mode):
    img = photo_like(40, 30).convert(mode if mode not in ("I", "F") else "L")
    if mode in ("I", "F"):
        img = img.convert(mode)
    if mode == "HSV":  # Pillow cannot save HSV; an 8-bit TIFF read back as RGB is the case
        img = photo_like(40, 30)
    fmt = {"I": "TIFF", "F": "TIFF", "HSV": "TIFF"}.get(mode, "PNG")
    d = decode_image(encode(img, fmt), (16, 16), 10**9)
    assert d.image.mode == "RGB"
    assert np.asarray(d.image).std() > 0


def test_pixel_bomb_header_is_refused_before_decoding():
    with pytest.raises(DecodeError) as e:
        decode_image(png_header_only(30000, 30000), SIZE, 100_000_000)
    assert e.value.error_type == "too_many_pixels"
    assert "30000x30000" in str(e.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_errors_not_grey_images(fmt):
    data = encode(photo_like(300, 200), fmt)
    with pytest.raises(DecodeError) as e:
        decode_image(data[: len(data) // 2], SIZE, 10**9)
    assert e.value.error_type in ("truncated", "corrupt")


def test_random_bytes_and_text_are_not_images():
    for data in (np.random.default_rng(1).bytes(4096), b"hello world\n"):
        with pytest.raises(DecodeError) as e:
            decode_image(data, SIZE, 10**9)
        assert e.value.error_type == "not_an_image"


def test_prepare_resizes_shorter_side_and_centre_crops():
    img = Image.new("RGB", (400, 200), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 100, 200))  # left quarter red: cropped away by centre crop
    _, pixels = prepare(encode(img, "PNG"), spec(100), 10**9)
    assert pixels.shape == (100, 100, 3) and pixels.dtype == np.uint8
    assert pixels[:, :, 0].max() < 30


def test_normalize_batch_applies_mean_std_and_layout():
    s = ModelSpec.from_dict({
        "name": "t", "version": "1", "input": {"name": "x", "size": [2, 2], "layout": "NCHW"},
        "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "outputs": {"ai_generated": "p"},
        "thresholds": {"ai_generated": 0.5, "not_ai_generated": 0.5}}, "/x")
    batch = np.full((1, 2, 2, 3), 255, dtype=np.uint8)
    x = s.normalize_batch(batch)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    assert np.allclose(x, 2.0)


def test_a_jpeg_header_cut_inside_a_segment_is_an_error_not_a_crash():
    with pytest.raises(DecodeError) as e:
        decode_image(b"\xff\xd8\xff\xe0 same broken bytes", SIZE, 10**9)
    assert e.value.error_type in ("truncated", "corrupt")



@pytest.fixture
def stalled_decoder(monkeypatch):
    """A stand-in for a file built to stall the decoder: decode_image blocks on data that
    starts with STALL until the returned event is set (or 30 s)."""
    import threading

    from synthsieve.transforms import decode

    released = threading.Event()
    real = decode.decode_image

    def stalling(data, *args, **kwargs):
        if data.startswith(b"STALL"):
            released.wait(30)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(decode, "decode_image", stalling)
    yield released
    released.set()


def test_a_decode_that_overruns_its_time_limit_becomes_a_timeout_error_row(
        stalled_decoder):
    import time

    from apache_beam.pvalue import TaggedOutput

    from synthsieve.elements import ERRORS, FetchedImage, ImageRef
    from synthsieve.provenance import ProvenanceOptions
    from synthsieve.transforms import decode

    released = stalled_decoder
    dofn = decode._Decode(None, 10_000_000, "run", ProvenanceOptions(), timeout_s=0.5)
    dofn.setup()
    good = encode(photo_like(64, 48), "PNG")

    started = time.perf_counter()
    [row] = list(dofn.process(FetchedImage(ImageRef("file:///stall", "s"), b"STALL" + good,
                                           "x")))
    took = time.perf_counter() - started
    assert isinstance(row, TaggedOutput) and row.tag == ERRORS
    assert (row.value["stage"], row.value["error_type"]) == ("decode", "timeout")
    assert "longer than 0.5 s" in row.value["message"]
    assert 0.5 <= took < 2.0  # the row came at the limit, not when the decoder gave up

    # the worker goes on: the next image decodes while the stalled one is still stuck
    [(info, _)] = list(dofn.process(FetchedImage(ImageRef("file:///ok", "ok"), good, "y")))
    assert (info.width, info.height, info.format) == (64, 48, "PNG")
    released.set()


def test_decoding_ahead_keeps_each_images_window_and_still_times_out_a_stalled_one(
        stalled_decoder):
    """With decode-ahead, images decode in background threads while the stage goes on:
    each output carries its own element's window (it may leave during a later element),
    a stalled decode still becomes a timeout row at the limit, and the others are not
    held back by it."""
    import time

    from apache_beam.pvalue import TaggedOutput
    from apache_beam.transforms.window import IntervalWindow
    from apache_beam.utils.windowed_value import WindowedValue

    from synthsieve.elements import ERRORS, FetchedImage, ImageRef
    from synthsieve.provenance import ProvenanceOptions
    from synthsieve.transforms import decode

    released = stalled_decoder
    dofn = decode._Decode(None, 10_000_000, "run", ProvenanceOptions(), timeout_s=0.5,
                          ahead=4, workers=2)
    dofn.setup()
    dofn.start_bundle()
    good = encode(photo_like(64, 48), "PNG")
    outputs = []
    started = time.perf_counter()
    try:
        for i in range(8):
            data = (b"STALL" + good) if i == 1 else good
            window = IntervalWindow(i * 10, i * 10 + 10)
            outputs += list(dofn.process(FetchedImage(ImageRef(f"f{i}", f"id{i}"), data, "x"),
                                         timestamp=i * 10, window=window))
        outputs += list(dofn.finish_bundle())
    finally:
        released.set()
    took = time.perf_counter() - started
    assert len(outputs) == 8 and took < 2.0
    by_id = {}
    for out in outputs:
        tagged = isinstance(out, TaggedOutput)
        wv = out.value if tagged else out
        assert isinstance(wv, WindowedValue)
        image_id = wv.value["image_id"] if tagged else wv.value[0].ref.image_id
        by_id[image_id] = (tagged, wv.windows[0].start)
    assert by_id.pop("id1") == (True, 10)  # the stalled one: a timeout row, in its window
    assert by_id == {f"id{i}": (False, i * 10) for i in range(8) if i != 1}
    assert [o for o in outputs if isinstance(o, TaggedOutput)][0].tag == ERRORS


def test_a_bundle_decodes_on_a_few_threads_however_many_images(monkeypatch):
    """Decode-ahead runs on `workers` threads for the bundle, not a thread per image (the
    thread-local state a C2PA read leaves outlives its thread), and they end with it."""
    import threading
    import time

    from apache_beam.transforms.window import GlobalWindow

    from synthsieve.elements import FetchedImage, ImageRef
    from synthsieve.provenance import ProvenanceOptions
    from synthsieve.transforms import decode

    ran_on: set[int] = set()
    real = decode.decode_image

    def recording(*args, **kwargs):
        ran_on.add(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, "decode_image", recording)
    dofn = decode._Decode(None, 10_000_000, "run", ProvenanceOptions(), ahead=8, workers=2)
    dofn.setup()
    dofn.start_bundle()
    data = encode(photo_like(32, 32), "PNG")
    out = []
    for i in range(60):
        out += list(dofn.process(FetchedImage(ImageRef(f"file:///{i}", str(i)), data, "s"),
                                 timestamp=0, window=GlobalWindow()))
    out += list(dofn.finish_bundle())
    assert len(out) == 60
    assert 1 <= len(ran_on) <= 2
    deadline = time.monotonic() + 5
    while ran_on & {t.ident for t in threading.enumerate()}:
        assert time.monotonic() < deadline, "decode threads outlived the bundle"
        time.sleep(0.01)
