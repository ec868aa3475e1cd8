"""Operations: the preflight checks and the task catalog."""
