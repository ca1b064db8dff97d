"""The batch loader: every training window once per epoch, every eval target once."""

import numpy as np
import pytest

from myllm.data.loader import TrainBatches, eval_batches


class ArrayReader:
    """A stand-in for ShardReader over an in-memory array."""

    def __init__(self, tokens):
        self.tokens = np.asarray(tokens)

    def __len__(self):
        return len(self.tokens)

    def slice(self, start, stop):
        return self.tokens[max(start, 0) : min(stop, len(self.tokens))].copy()


@pytest.mark.parametrize("n, seq_len, stride", [(1000, 64, 64), (1000, 64, 32), (1000, 64, 1), (65, 64, 32),
                                                (66, 64, 32), (2, 8, 4), (500, 64, 48)])
def test_eval_scores_every_target_exactly_once_in_order(n, seq_len, stride):
    tokens = np.arange(n) + 10
    scored = []
    for x, y in eval_batches(ArrayReader(tokens), 3, seq_len, stride=stride):
        for row_x, row_y in zip(x.numpy(), y.numpy()):
            keep = row_y != -100
            # each scored target is the token right after its input position
            assert (row_y[keep] == row_x[keep] + 1).all()
            scored += row_y[keep].tolist()
    assert scored == tokens[1:].tolist()


def test_overlapping_windows_give_context():
    tokens = np.arange(300)
    for _x, y in list(eval_batches(ArrayReader(tokens), 1, 64, stride=16))[1:]:
        first = int((y[0] != -100).nonzero()[0])
        assert first >= 64 - 16


def test_training_epoch_visits_every_window_once_and_resumes_exactly():
    tokens = np.arange(10 * 8 + 1)
    a = TrainBatches(ArrayReader(tokens), batch_size=2, seq_len=8, seed=3)
    firsts = [int(x[r, 0]) for _ in range(5) for x, _ in [a.next_batch()] for r in range(2)]
    assert sorted(firsts) == list(range(0, 80, 8))  # one epoch = every window once
    b = TrainBatches(ArrayReader(tokens), batch_size=2, seq_len=8, seed=3)
    for _ in range(3):
        b.next_batch()
    c = TrainBatches(ArrayReader(tokens), batch_size=2, seq_len=8, seed=3)
    c.load_state_dict(b.state_dict())
    for _ in range(7):  # across the epoch boundary too
        assert all((p == q).all() for p, q in zip(b.next_batch(), c.next_batch()))
    ranks = [TrainBatches(ArrayReader(tokens), 1, 8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    seen = [int(rk.next_batch()[0][0, 0]) for _ in range(5) for rk in ranks]
    assert sorted(seen) == list(range(0, 80, 8))  # ranks split the epoch without overlap
