"""Serving: the model registry and champion alias, the pyfunc model, the KServe manifest and its check."""
