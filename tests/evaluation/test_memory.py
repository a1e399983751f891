"""
The chunked IWAE estimate (pyprobvae.evaluation.metrics.iwae_log_likelihood)
holds memory bounded whatever the number of chunks: nothing outlives a pass
but the preallocated output.

RSS is too noisy to test this: on digits with K = 100000 (one example and
seven passes per chunk) it was measured between 400 and 516 MB from chunk to
chunk, as glibc keeps 10 to 126 MB of the passes' freed 16 MB blocks, against
an old growth of about 0.5 kB of heap per chunk. The tests count the objects
that a pass leaves alive instead, which is exact: before the fix every chunk
left its estimate behind, one tensor more per chunk, held in a list until the
final concatenation and interleaved on the heap with the passes' large
transient blocks.
"""

import gc

import pytest
import torch

from pyprobvae.data import load_digits
from pyprobvae.evaluation import metrics
from tests.common import tiny_model

CHUNKS = 40
SAMPLES = 4


def _live_counts(monkeypatch, model, counted_chunks):
    """
    ``{chunk: (tensors, objects)}``: the tensors and gc-tracked Python objects
    alive (after a collection) at the end of the pass of each of
    ``counted_chunks`` (counted from 1), with one example and one pass per
    chunk (``max_rows = num_samples``) over :data:`CHUNKS` chunks.
    """
    net = tiny_model(model)
    net.eval()
    test = load_digits("test")
    y = test.y[:CHUNKS] if net.conditional else None
    weights = metrics.log_importance_weights
    chunks, counts = [0], {}

    def counting(*args, **kwargs):
        log_w = weights(*args, **kwargs)
        chunks[0] += 1
        if chunks[0] in counted_chunks:
            gc.collect()
            live = gc.get_objects()
            counts[chunks[0]] = (sum(issubclass(type(o), torch.Tensor) for o in live), len(live))
        return log_w

    monkeypatch.setattr(metrics, "log_importance_weights", counting)
    estimates = metrics.iwae_log_likelihood(net, test.x[:CHUNKS], SAMPLES, max_rows=SAMPLES, y=y)
    assert estimates.shape == (CHUNKS,) and torch.isfinite(estimates).all()
    assert chunks[0] == CHUNKS
    return counts


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_iwae_keeps_nothing_alive_per_chunk(monkeypatch, model):
    """
    The live tensors after chunk 4n are those after chunk n, and the Python
    objects no more (before the fix: 3n more of each, one per chunk, from
    chunk 1 on). From chunk 2 on both counts were measured flat; under
    pytest the object count after chunk 40 has come out 1 below that after
    chunk 10, never above, hence the margin, far below 3n.
    """
    n = CHUNKS // 4
    counts = _live_counts(monkeypatch, model, (n, 4 * n))
    (tensors_n, objects_n), (tensors_4n, objects_4n) = counts[n], counts[4 * n]
    assert tensors_4n == tensors_n, counts
    assert objects_4n - objects_n < n, counts
