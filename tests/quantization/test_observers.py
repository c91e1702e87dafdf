import math

import pytest
import torch

from quamba.errors import QuambaError
from quamba.quantization.observers import OBSERVERS, make_observer


@pytest.mark.parametrize("percentile", [0.9, 0.999, 0.99999, 1.0])
def test_percentile_is_exact_and_streaming(percentile):
    torch.manual_seed(0)
    # the largest values come first: a streaming top-k that shrank early would lose them
    chunks = [torch.randn(3, 1000, 7) * (5 - i) for i in range(5)]
    obs = make_observer("percentile", percentile=percentile)
    obs.expect(len(chunks))
    for c in chunks:
        obs.update(c)
    everything = torch.cat([c.reshape(-1) for c in chunks]).abs()
    # nearest rank: the smallest value with at least a fraction `percentile` of the data at or below it
    expected = torch.sort(everything).values[math.ceil(percentile * everything.numel()) - 1]
    assert obs.amax().item() == expected.item()
    if percentile < 1.0:
        assert torch.quantile(everything, percentile, interpolation="lower") <= expected
    # bounded memory: it keeps only the top (1 - percentile) fraction
    assert obs.top.numel() <= (1 - percentile) * everything.numel() + 2


def test_minmax_and_registry():
    obs = make_observer("minmax")
    obs.update(torch.tensor([1.0, -3.0]))
    obs.update(torch.tensor([2.0]))
    assert obs.amax().item() == 3.0
    assert obs.scale().item() == pytest.approx(3.0 / 127)
    assert {"minmax", "percentile"} <= set(OBSERVERS)
    with pytest.raises(QuambaError, match="unknown observer 'nope'"):
        make_observer("nope")
