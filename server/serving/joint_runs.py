"""Runs of several generation sessions in one forward pass of their tail (batching across devices).

Each session brings its own run (a prompt, a generated token, or the context's last token and its drafts: T_i
positions of the tensors crossing its cut) and its own key/value cache (p_i positions). The pass pads the runs
to the longest (zeros: token 0, or zero hidden states) and the caches to the longest, and masks both
(qpart.common.kvcache.RaggedCache): row i's query j sees its own cached positions 0 .. p_i - 1 and its run's
positions 0 .. j, nothing of the padding and nothing of other rows; positions (learned or rotary) are each
row's own, p_i + j. Each session's cache then gets its own new keys and values; padded outputs are dropped.
A lone run goes through the tail as it is, with its own cache.
"""
import numpy as np
import torch

from qpart.common.kvcache import KVCache, RaggedCache


def run_ragged(tail, runs: list[tuple[KVCache, list[np.ndarray]]]) -> list[np.ndarray]:
    """The tail over several sessions' runs in one pass: each run's crossing tensors, each [1, T_i, ...], with its
    session's cache (advanced by T_i on return). Returns each run's scores [T_i, vocab]."""
    with torch.inference_mode():
        if len(runs) == 1:
            cache, x = runs[0]
            return [tail(*[torch.from_numpy(t) for t in x], cache=cache)[0][0].numpy()]
        lengths = [x[0].shape[1] for _, x in runs]
        padded = []
        for j, first in enumerate(runs[0][1]):
            joined = np.zeros((len(runs), max(lengths)) + first.shape[2:], np.float32)     # [n, T, ...]
            for i, (_, x) in enumerate(runs):
                joined[i, :lengths[i]] = x[j][0]
            padded.append(torch.from_numpy(joined))
        cache = RaggedCache([c for c, _ in runs], lengths)
        scores = tail(*padded, cache=cache)[0]                                   # [n, T, vocab]
        cache.commit()
        return [scores[i, :t].numpy() for i, t in enumerate(lengths)]
