"""Infrastructure: artifact storage, input fingerprints, the MLflow connection and the trial bank."""
