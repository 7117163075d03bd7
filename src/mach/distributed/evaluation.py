"""Evaluation on a Ray cluster: one actor per repetition group loads its models once and sends back its
[rows, g, B] logits one test batch at a time; the driver joins the groups' chunks into [rows, R, B]
and merges them with evaluation.merge_blocks, as a local run does. It asks for the next chunk before
merging the current one, so it holds one chunk while the next one waits in Ray's object store."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

from mach.distributed.launch import connect

EVAL_START_TIMEOUT_S = 600  # for the cluster to find room for every evaluation group at once


def grouped_topk_on_ray(address: str):
    """mach.evaluation.grouped_topk, run on the Ray cluster at address."""
    return functools.partial(_grouped_topk_on_ray, address=address)


def _grouped_topk_on_ray(
    cfg, R: int, data_manifest: dict, R_values, impl: str, log, merge, epoch: int, *, address: str
) -> dict:
    """evaluation.grouped_topk on the cluster: one actor per group, the chunks merged here (nothing
    is spilled). Returns grouped_topk's dict."""
    import numpy as np

    from mach.evaluation import held_besides_logits, merge_blocks, repetition_groups

    ray = connect(address)
    cfg = dataclasses.replace(
        cfg, work_dir=str(Path(cfg.work_dir).resolve()), data_dir=str(Path(cfg.data_dir).resolve())
    )
    groups = [list(rs) for rs in repetition_groups(R, cfg.eval_group_size)]
    have = ray.cluster_resources()
    if have.get("GPU", 0) > 0:
        per_group = {"num_cpus": 1, "num_gpus": math.ceil(len(groups[0]) / (cfg.R_per_device or R))}
    else:
        per_group = {"num_cpus": 1, "num_gpus": 0}
    for key, ray_key in [("num_cpus", "CPU"), ("num_gpus", "GPU")]:
        need = per_group[key] * len(groups)
        if need > have.get(ray_key, 0):
            raise ValueError(
                f"evaluating through Ray holds all {len(groups)} groups of eval_group_size="
                f"{cfg.eval_group_size} at once, {per_group[key]} {ray_key} each, but the cluster "
                f"has {have.get(ray_key, 0):g} {ray_key}: raise eval_group_size (fewer, larger "
                "groups) or add nodes"
            )
    # The networks sit in the actors; the driver holds the lookups and the logits.
    m = driver_merge_rows(cfg, R, held_besides_logits(cfg, R, 0, merge, on_host=False))
    log(f"merge_rows={m} (the driver's memory within eval_budget_gb={cfg.eval_budget_gb:g})")
    Forward = ray.remote(max_restarts=0)(GroupForward)
    actors = [Forward.options(**per_group).remote() for _ in groups]
    try:
        loads = [
            a.load.remote(dataclasses.asdict(cfg), rs, epoch, data_manifest)
            for a, rs in zip(actors, groups)
        ]
        ready, _ = ray.wait(loads, num_returns=len(loads), timeout=EVAL_START_TIMEOUT_S)
        if len(ready) < len(loads):
            raise ValueError(
                f"the cluster found no room for all {len(groups)} evaluation groups within "
                f"{EVAL_START_TIMEOUT_S} s ({per_group} each); is training still running? "
                "(train.sh --ray ... --status)"
            )
        infos = _get(ray, loads)
        for info in infos:
            for message in info["messages"]:
                log(f"node={info['ip']} {message}")
        # [R, K] int32, the groups' lookups in r order
        label_to_bucket = np.concatenate([info["label_to_bucket"] for info in infos])
        true_labels: list = []

        def blocks():
            # The next chunk is asked for before this one is merged: forward and merge overlap.
            asked = [a.next_chunk.remote(j == 0) for j, a in enumerate(actors)]
            while True:
                chunks = _get(ray, asked)
                if chunks[0] is None:
                    return
                asked = [a.next_chunk.remote(j == 0) for j, a in enumerate(actors)]
                true_labels.extend(chunks[0][1])
                yield from merge_steps([c[0] for c in chunks], m)

        out = merge_blocks(cfg, blocks(), label_to_bucket, R_values, impl, log, merge)
    finally:
        for actor in actors:
            ray.kill(actor)
    return {
        **out,
        "true_labels": true_labels,
        "n_params": sum(info["n_params"] for info in infos),
        "devices": [f"{info['ip']}:{d}" for info in infos for d in info["devices"]],
        "groups": len(groups),
        "merge_rows": m,
    }


def driver_merge_rows(cfg, R: int, held: dict[str, int]) -> int:
    """Rows per merge step on the driver within eval_budget_gb, less `held` (bytes by name).

    The driver holds a batch's [b, R, B] float32 logits as the groups sent them and the next batch on
    its way, and a merge step's [m, R, B] twice more (their concatenation, the contiguous copy of the
    first R' repetitions for a sweep)."""
    from mach.evaluation import left_bytes, left_of_budget

    budget = left_bytes(cfg, held)
    row_bytes, b = R * cfg.B * 4, cfg.eval_batch_size
    if 2 * b * row_bytes + 2 * row_bytes > budget:
        raise ValueError(
            f"evaluating through Ray, the driver holds two batches of eval_batch_size={b} rows of "
            f"R={R} repetitions' logits, {2 * b * row_bytes / 2**30:.2f} GiB, more than the "
            f"{left_of_budget(cfg, held)}: lower eval_batch_size or raise eval_budget_gb"
        )
    return max(1, min(b, int((budget - 2 * b * row_bytes) // (2 * row_bytes))))


def merge_steps(pieces: list, m: int):
    """The groups' [batch, g, B] pieces of one batch side by side, [m, R, B] at a time (in r order)."""
    import numpy as np

    for i in range(0, len(pieces[0]), m):
        yield np.concatenate([p[i : i + m] for p in pieces], axis=1)


def _get(ray, refs):
    """ray.get; a user error raised in an actor is raised here as itself (no remote traceback)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, (ValueError, FileNotFoundError, ImportError)):
            raise type(err.cause)(f"on a Ray node: {err.cause}") from None
        raise


class GroupForward:
    """Ray actor: the models of one repetition group and an iterator over the test rows."""

    def load(self, cfg_values: dict, rs: list[int], epoch: int, data_manifest: dict) -> dict:
        import numpy as np
        import ray

        from mach import devices, evaluation
        from mach.config import from_dict
        from mach.identity import data_fingerprint

        self.cfg = cfg = from_dict(cfg_values)
        messages: list[str] = []
        devices.configure_devices(cfg, messages.append)
        placed = devices.placement_devices()
        devices.check_placement(len(rs), placed, cfg.R_per_device)
        data = data_fingerprint(data_manifest)
        reps = evaluation.load_repetitions(cfg, rs, epoch, data, messages.append, placed)
        self.forward = evaluation.make_forward(cfg, reps)
        self.batches = iter(evaluation.test_batches(cfg, data_manifest))
        used = placed[: 1 if cfg.R_per_device == 0 else -(-len(rs) // cfg.R_per_device)]
        return {
            "ip": ray.util.get_node_ip_address(),
            "messages": messages,
            "label_to_bucket": np.stack([rep.label_to_bucket for rep in reps]),  # [g, K] int32
            "n_params": sum(rep.model.n_params() for rep in reps),
            "devices": used,
        }

    def next_chunk(self, with_labels: bool):
        """(logits [batch, g, B] float32, labels or None) of the next test batch; None at end."""
        from mach.evaluation import row_labels

        parsed = next(self.batches, None)
        if parsed is None:
            return None
        return self.forward(parsed).numpy(), (row_labels(parsed) if with_labels else None)
