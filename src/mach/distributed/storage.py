"""The shared storage of a Ray launch: a probe on every node that it can read the inputs and write the
outputs at the same paths, and runs the same code, before anything is launched."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from mach.presets import CLONE, presets_file

PROBE_TIMEOUT_S = 120  # each node's storage check, its worker process start included


def job_dir(cfg) -> Path:
    return cfg.dataset_dir() / "ray-jobs"


def code_fingerprint() -> str:
    """sha256 of config.py and this package's Python files on this node."""
    digest = hashlib.sha256()
    for path in [presets_file(), *sorted(Path(__file__).parents[1].rglob("*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def storage_plan(cfg, data_manifest: dict, R: int, token: str) -> dict:
    """What every node must read (path, expected size or None) and write; the launch's token."""
    tf_dir = cfg.tfrecord_dir()
    reads = [(str(tf_dir / "manifest.json"), None), (str(tf_dir / "train_label_counts.npy"), None)]
    for split in ["train", "test"]:
        sizes = data_manifest[split].get("sizes", {})
        reads += [(str(tf_dir / name), sizes.get(name)) for name in data_manifest[split]["shards"]]
    reads.append((str(cfg.lookup_dir() / "manifest.json"), None))
    for r in range(R):
        reads += [(str(cfg.label_lookup_path(r)), None), (str(cfg.inverse_lookup_path(r)), None)]
        if cfg.feat_hash_dim is not None:
            reads.append((str(cfg.feature_lookup_path(r)), None))
    writes = [str(cfg.run_dir() / "ckpt"), str(cfg.log_dir()), str(job_dir(cfg))]
    return {
        "reads": reads,
        "writes": writes,
        "token_file": str(job_dir(cfg) / "launch.token"),
        "token": token,
    }


def storage_problems(plan: dict) -> list[str]:
    """What this node cannot do with the shared storage of the plan (empty: nothing)."""
    problems = []
    for path, size in plan["reads"]:
        try:
            with open(path, "rb") as f:
                f.read(1)
                found = os.fstat(f.fileno()).st_size
        except OSError as err:
            problems.append(f"cannot read {path} ({err.strerror})")
            continue
        if size is not None and found != size:
            problems.append(f"{path} has {found} bytes, not {size}")
    try:
        seen = Path(plan["token_file"]).read_text()
    except OSError:
        seen = None
    if seen != plan["token"]:
        problems.append(
            f"sees {'no' if seen is None else 'another'} launch token in {plan['token_file']}: "
            "that directory is not the shared one here"
        )
    for directory in plan["writes"]:
        probe = Path(directory) / f".probe-{socket.gethostname()}-{os.getpid()}"
        try:
            probe.write_text(plan["token"])
            probe.unlink()
        except OSError as err:
            problems.append(f"cannot write in {directory} ({err.strerror})")
    return problems


def probe_node(plan: dict, fingerprint: str) -> dict:
    """Ray task on one node: its host name and its storage or code problems."""
    problems = storage_problems(plan)
    if code_fingerprint() != fingerprint:
        problems.append(
            f"runs other code ({CLONE}: config.py or src/mach differ from the launching node's); "
            "install the same commit on every node"
        )
    return {"host": socket.gethostname(), "problems": problems}


def check_nodes(ray, plan: dict) -> list[str]:
    """Probe every alive node; a ValueError naming each node that cannot use the storage."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node["Alive"]]
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)
    refs = {
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(plan, code_fingerprint()): node
        for node in nodes
    }
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    failures = [
        f"node {refs[ref]['NodeManagerAddress']}: no answer within {PROBE_TIMEOUT_S} s"
        for ref in late
    ]
    for ref in ready:
        where = f"node {refs[ref]['NodeManagerAddress']}"
        try:
            found = ray.get(ref)
        except ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None) or err
            failures.append(
                f"{where}: the check could not run ({type(cause).__name__}: "
                f"{str(cause).splitlines()[0][:200]}); install this repository there with "
                "`pip install -e .[ray]`"
            )
            continue
        if found["problems"]:
            shown = found["problems"][:3]
            more = len(found["problems"]) - len(shown)
            failures.append(
                f"{where} (host {found['host']}): "
                + "; ".join(shown)
                + (f"; and {more} more" if more else "")
            )
    if failures:
        raise ValueError(
            "nothing was launched: these nodes of the Ray cluster cannot use the shared storage\n  "
            + "\n  ".join(failures)
            + f"\nEvery node reads the TFRecords and lookups and writes checkpoints and logs under "
            f"{Path(plan['token_file']).parents[1]}: mount that directory at the same path on "
            "every node (NFS, a mounted bucket), or take the node out of the cluster (`ray stop` "
            "on it)"
        )
    return sorted(str(node["NodeManagerAddress"]) for node in nodes)
