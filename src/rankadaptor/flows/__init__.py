"""The job's flows: what each pipeline step does, as library calls on a JobConfig (steps only adapt them)."""
