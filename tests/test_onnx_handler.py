"""How the ONNX handler spends its threads: a model that runs one image per call runs several
such calls at once, each on its own thread, with the same outputs as one call at a time."""

from __future__ import annotations

import threading
import time

import numpy as np
from corpus import sample_model_inputs

from synthsieve.inference.onnx_handler import OnnxImageModelHandler
from synthsieve.inference.spec import ModelSpec


class _WatchedSession:
    """Delegates to an InferenceSession and records which threads ran it, how many at once."""

    def __init__(self, session):
        self._session = session
        self._lock = threading.Lock()
        self.running = self.most_at_once = 0
        self.threads: set[str] = set()

    def run(self, *args, **kwargs):
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(0.02)  # a tiny model answers faster than a thread starts
            return self._session.run(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1

    def __getattr__(self, name):
        return getattr(self._session, name)


def _onnx_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("synthsieve-onnx")]


def test_one_image_calls_run_at_once_on_threads_of_their_own_with_identical_outputs(
        default_model):
    spec = ModelSpec.load(default_model)
    assert not spec.batch_invariant
    images = sample_model_inputs(spec)
    outputs, watched = {}, {}
    for calls in (1, None):  # one at a time on both threads; the default
        handler = OnnxImageModelHandler(spec, batch_size=len(images), intra_op_threads=2,
                                        concurrent_calls=calls)
        model = handler.load_model()
        model._session = watched[calls] = _WatchedSession(model.session)
        outputs[calls] = [r.inference for r in handler.run_inference(images, model)]
        model.close()
        assert _onnx_threads() == []  # closing the model ends its calling threads
    assert watched[1].most_at_once == 1
    assert watched[None].most_at_once == 2
    assert all(name.startswith("synthsieve-onnx") for name in watched[None].threads)
    for a, b in zip(outputs[1], outputs[None], strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert np.array_equal(a[name], b[name]), name


def test_a_batch_invariant_model_runs_each_batch_in_one_call_on_every_thread(tiny_model):
    spec = ModelSpec.load(tiny_model)
    assert spec.batch_invariant
    handler = OnnxImageModelHandler(spec, batch_size=4, intra_op_threads=2)
    model = handler.load_model()
    model._session = watched = _WatchedSession(model.session)
    batch = [np.full((spec.height, spec.width, 3), v, np.uint8) for v in (0, 60, 120, 240)]
    assert len(list(handler.run_inference(batch, model))) == 4
    model.close()
    assert watched.most_at_once == 1 and watched.threads == {threading.current_thread().name}
