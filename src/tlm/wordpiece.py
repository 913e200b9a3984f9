"""A WordPiece vocabulary learned the way `tokenizers`' WordPieceTrainer learns it, but the same in
every process.

The trainer of the `tokenizers` library numbers the continuation pieces (`##x`) in the order it
meets them in a hash map, and breaks ties between equally frequent pairs by those numbers, so two
trainings on the same texts give vocabularies that differ by a few hundred rare tokens (measured
on the demo: three runs, three vocabularies), and with them every model trained on top. Here the
same algorithm (BPE merges of the most frequent adjacent pair, `##` marking a piece inside a word,
no merge of a pair seen fewer than `min_frequency` times) breaks ties by the pieces' strings.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable

PREFIX = "##"


def word_counts(texts: Iterable[str], normalizer, pre_tokenizer) -> Counter:
    """How often each word occurs, as the tokenizer's normalizer and pre-tokenizer cut the texts."""
    counts: Counter = Counter()
    texts = iter(texts)
    while batch := list(
        itertools.islice(texts, 32)
    ):  # one call per 32 texts (a newline separates words): 1.6x
        counts.update(
            word
            for word, _ in pre_tokenizer.pre_tokenize_str(
                normalizer.normalize_str("\n".join(batch))
            )
        )
    return counts


def learn_vocab(
    counts: Counter, vocab_size: int, min_frequency: int, specials: list[str]
) -> list[str]:
    """The vocabulary: `specials`, every character (and its `##` form where it occurs inside a
    word), then merged pieces, most frequent pair first (ties: by the pieces' strings), until
    `vocab_size` or no pair occurs `min_frequency` times."""
    words = sorted(counts)
    alphabet = sorted(
        {c for w in words for c in w[:1]} | {PREFIX + c for w in words for c in w[1:]}
    )
    vocab = list(dict.fromkeys([*specials, *alphabet]))
    ids = {t: i for i, t in enumerate(vocab)}
    seqs = [[ids[w[0]], *(ids[PREFIX + c] for c in w[1:])] for w in words]
    freq = [counts[w] for w in words]

    pairs: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:]):
            pairs[pair] += freq[i]
            where[pair].add(i)
    heap = [(-n, vocab[a], vocab[b], a, b) for (a, b), n in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        n, _, _, a, b = heapq.heappop(heap)
        if pairs.get((a, b), 0) != -n:
            continue  # an outdated count: the pair's current one is further down the heap
        if -n < min_frequency:
            break
        piece = vocab[a] + vocab[b].removeprefix(PREFIX)
        if piece not in ids:
            ids[piece] = len(vocab)
            vocab.append(piece)
        new = ids[piece]
        changed = set()
        for i in where.pop((a, b)):
            old = seqs[i]
            for pair in zip(old, old[1:]):
                pairs[pair] -= freq[i]
                changed.add(pair)
            seq, j = [], 0
            while j < len(old):
                if j + 1 < len(old) and old[j] == a and old[j + 1] == b:
                    seq.append(new)
                    j += 2
                else:
                    seq.append(old[j])
                    j += 1
            for pair in zip(seq, seq[1:]):
                pairs[pair] += freq[i]
                where[pair].add(i)
                changed.add(pair)
            seqs[i] = seq
        pairs.pop((a, b), None)
        for pair in changed - {(a, b)}:
            if pairs[pair] > 0:
                heapq.heappush(heap, (-pairs[pair], vocab[pair[0]], vocab[pair[1]], *pair))
    return vocab
