"""Text and music in, ids and batches out: corpus registry, fetching, files, vocabulary, batching."""
