"""``dstlab study status``: counts by status, failures with their first error line, an ETA."""

from __future__ import annotations

from pathlib import Path

from dstlab.run import files
from dstlab.study.results import open_store
from dstlab.study.store import STATUSES


def study_status(study_dir: str | Path) -> str:
    """A short plain-text summary of a study directory."""
    with open_store(study_dir) as store:
        rows = store.rows()
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [f"{study_dir}: {len(rows)} runs"]
    lines += [f"  {status:<9}{counts[status]:>6}" for status in STATUSES]
    seconds = [r["seconds"] for r in rows if r["status"] == files.DONE and r["seconds"]]
    left = counts["pending"] + counts["running"]
    if seconds and left:
        mean = sum(seconds) / len(seconds)
        parallel = max(1, counts["running"])
        lines.append(
            f"  mean run {mean:.1f} s; ETA {_duration(mean * left / parallel)} "
            f"at {parallel} run(s) at a time"
        )
    stacks = running_stacks(study_dir, [r["run_id"] for r in rows if r["status"] == "running"])
    if stacks:
        sizes = ", ".join(str(len(s)) for s in stacks)
        lines.append(f"  running stacked: {len(stacks)} stack(s) of {sizes} run(s)")
    failures = [r for r in rows if r["status"] == files.FAILED]
    if failures:
        lines.append("failures (rerun with --retry-failed):")
        for row in failures[:20]:
            first = (row["error"] or "no error text").strip().splitlines()[0]
            lines.append(f"  {row['run_id']}  {first[:160]}")
        if len(failures) > 20:
            lines.append(f"  ... and {len(failures) - 20} more")
    from dstlab.study.slurm_status import slurm_lines

    lines += slurm_lines(study_dir, {r["run_id"]: r["status"] for r in rows})
    return "\n".join(lines)


def running_stacks(study_dir: str | Path, running: list[str]) -> list[tuple[str, ...]]:
    """The stacks the running runs train in, as each run's metrics name them (its latest
    `stack` record); runs training alone are left out."""
    from dstlab.run import files
    from dstlab.study.results import RUNS_DIR

    found = set()
    for run_id in running:
        path = Path(study_dir) / RUNS_DIR / run_id / files.METRICS
        if not path.is_file():
            continue
        records = [r for r in files.read_metrics(path) if r.get("kind") == "stack"]
        if records:
            found.add(tuple(records[-1]["run_dirs"]))
    return sorted(found)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
