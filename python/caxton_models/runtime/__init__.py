"""The runtime: from a model folder to vectors.

``_modelconfig`` reads what a folder says about running it; ``_optimize``
derives optimised and int8 graphs into the store's graph cache;
``embedder`` (:class:`Embedder`) tokenizes, batches through the core and runs
ONNX Runtime; ``loaded`` keeps loaded models under memory limits; ``batcher``
merges many concurrent callers into shared batches. The runtime never
downloads: it is handed a folder.
"""
