"""Tokens: a corpus's ids, cached on disk and laid out in batches.

    prepare       corpus path -> token ids per split (read, split, segment, fit the vocabulary, encode)
    store         the token cache: segmentations as memory-mapped int32 ids, keyed by text and settings
    batches       ids -> (B, T) windows for truncated BPTT
    open_vocab    what spelling out each <unk> word costs: the open-vocabulary score
    cache_admin   listing, pruning and clearing the cache; cache_report describes it for a reader
"""
