"""Kubeflow pipeline definitions (DAG wiring) over the components."""
