"""The terminal's one line per step: a step prints its progress lines with this prefix, and the local runner
shows exactly those lines (the rest of a step's output goes to the log file)."""

PROGRESS = "progress: "


def progress(line: str) -> None:
    print(f"{PROGRESS}{line}", flush=True)
