"""The job as steps over artifacts: each function is what one Kubeflow component runs.

`model` holds the steps that load a model (GPU steps), `search` the light ones (no transformers, peft or
lm-eval), `register` the last step. docs/architecture.md draws the flow.
"""
