"""Images to vectors: catalog loading, safe fetching, the multitask model, training and encoding."""
