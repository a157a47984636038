"""Adapters to the frameworks people plug embedders into, each an optional
extra that imports its framework only when its module is imported:

- :mod:`caxton_models.integrations.langchain`: ``CaxtonEmbeddings``
  (``langchain_core.embeddings.Embeddings``), extra ``[langchain]``;
- :mod:`caxton_models.integrations.llama_index`: ``CaxtonEmbedding``
  (``BaseEmbedding``), extra ``[llama-index]``;
- :mod:`caxton_models.integrations.haystack`: ``CaxtonTextEmbedder`` and
  ``CaxtonDocumentEmbedder`` components, extra ``[haystack]``;
- :mod:`caxton_models.integrations.chroma`: ``CaxtonEmbeddingFunction``,
  registered with Chroma as ``"caxton"``, extra ``[chroma]``.

Each loads its model through :func:`caxton_models.load` (cache, verification,
fallback chain), embeds queries and documents with the model's own prompts
(``kind="query"`` / ``kind="passage"``), and says which model and revision
made its vectors.
"""
