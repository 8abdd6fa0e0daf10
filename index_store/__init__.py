"""Vectors to neighbours: backend interface, nmslib HNSW and exact backends, artifacts, evaluation."""
