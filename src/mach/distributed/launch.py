"""Train and evaluate MACH repetitions as Ray tasks on a cluster: train.sh's jobs, on many machines.

    ./train.sh --dataset amazon3m --ray auto --per-gpu 2 --wait      # on any node of the cluster
    python -m mach.distributed.launch --ray auto --dataset amazon3m --status   # or --logs, --wait, --stop
    python evaluate.py --dataset amazon3m --ray auto --set eval_group_size=4

Training: one task per block of repetitions (--block, default 1), each in a fresh process calling
train_repetitions, so a task that Ray runs again after its process or node died
(--retries) continues from its last complete epoch; finished repetitions are not launched at all.
A detached actor `mach-<dataset>-<id>` (namespace "mach") owns the tasks, so they outlive the
command that launched them, and --stop kills it and with it every task. Each job logs to
<work>/<dataset>/ray-jobs/<job>.log and leaves its exit code in <job>.exit, as train.sh's jobs do
in jobs/.

Storage: every node reads the TFRecords and lookups and writes the checkpoints at the same paths,
so the work directory must be on a file system that all nodes mount at the same place; a probe
checks this on every node before a launch (mach.distributed.storage). Evaluation on the cluster:
mach.distributed.evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from mach.cli import (
    add_config_flags,
    config_from_args,
    run_main,
    setup_logging,
    show_tensorflow_logs,
)
from mach.distributed.storage import (
    PROBE_TIMEOUT_S,
    check_nodes,
    job_dir,
    storage_plan,
    storage_problems,
)
from mach.presets import CLONE, load_presets

NAMESPACE = "mach"
CONNECT_TIMEOUT_S = 10  # a head that accepts no TCP connection in this time is unreachable
POLL_S = 2  # --wait looks at the launch this often, as train.sh does
STOP_TIMEOUT_S = 30  # --stop waits this long for the tasks it killed to end


def import_ray():
    """The ray module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            f"Ray is not installed for {sys.executable}; install the extra with "
            "`pip install -e .[ray]` (or `pip install -r requirements-ray.txt`) on every node"
        ) from None
    return ray


def connect(address: str):
    """ray, connected to the cluster at HOST:PORT ('auto': the cluster this node belongs to)."""
    ray = import_ray()
    if address != "auto" and not address.startswith("ray://"):
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"--ray {address}: expected HOST:PORT of the head node (`ray start --head` "
                "prints it) or 'auto'"
            )
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise ValueError(
                f"cannot reach a Ray cluster at {address} ({err.strerror or err}): start one "
                f"there with `ray start --head --port {port}`, check the address with `ray "
                "status` on the head node, or pass --ray auto on a node of the cluster"
            ) from None
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            logging_level=logging.WARNING,
            log_to_driver=False,  # each job writes its own log file
        )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        raise ValueError(
            f"cannot connect to the Ray cluster at {address} ({str(err).splitlines()[0][:300]}); "
            "this command must run on a node of the cluster (`ray start --address HEAD:PORT` "
            "joins one)"
        ) from None
    return ray


def config_from_dict(values: dict):
    """A Config rebuilt on a node from its dict (tasks get plain dicts, not the class)."""
    from mach.config import from_dict

    return from_dict(values)


def launch_name(cfg) -> str:
    """The supervisor actor's name: the dataset and an id of the work directory (as train.sh)."""
    work_id = hashlib.sha1(str(Path(cfg.work_dir).resolve()).encode()).hexdigest()[:6]
    return f"mach-{cfg.name}-{work_id}"


def job_name(rs: list[int]) -> str:
    return f"r{rs[0]:02d}" + (f"-{rs[-1]:02d}" if len(rs) > 1 else "")


def cut_blocks(repetitions: list[int], size: int) -> list[list[int]]:
    """Runs of consecutive r, each cut into blocks of at most size (job names stay rNN-MM)."""
    runs: list[list[int]] = []
    for r in repetitions:
        if runs and runs[-1][-1] == r - 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    return [run[i : i + size] for run in runs for i in range(0, len(run), size)]


def _log_to(path: Path) -> None:
    """Send this process's stdout and stderr (TensorFlow's messages included) to the job's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives with the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _count_attempt(path: Path) -> int:
    """1 on a task's first run, 2 on its first retry, ... (kept on the shared storage)."""
    try:
        attempt = int(path.read_text()) + 1
    except (OSError, ValueError):
        attempt = 1
    path.write_text(f"{attempt}\n")
    return attempt


def train_block(cfg_values: dict, rs: list[int], overwrite: bool, plan: dict) -> int:
    """Ray task: train repetitions rs here, logging to the job's log; train.py's exit code."""
    cfg = config_from_dict(cfg_values)
    jobs = job_dir(cfg)
    _log_to(jobs / f"{job_name(rs)}.log")
    show_tensorflow_logs(False)  # the job's log holds its own lines only, as train.py's does
    log = setup_logging().info
    attempt = _count_attempt(jobs / f"{job_name(rs)}.attempts")
    log(
        f"ray_task job={job_name(rs)} attempt={attempt} host={socket.gethostname()} "
        f"pid={os.getpid()} repetitions={','.join(map(str, rs))}"
    )
    return run_main(lambda: _train_block(cfg, rs, overwrite, plan, log))


def _train_block(cfg, rs, overwrite, plan, log) -> int:
    # A node that joined after the launch's probe is checked here (no retry: the error is final).
    problems = storage_problems(plan)
    if problems:
        raise ValueError(
            f"host {socket.gethostname()} cannot use the shared storage: {problems[0]}"
        )
    from mach.data.prepare import load_data_manifest, with_data_sizes
    from mach.devices import configure_devices
    from mach.training import train_repetitions

    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    configure_devices(cfg, log)
    # --overwrite: a retry resumes once this launch has replaced the block's checkpoints (their
    # config.json newer than the launch token, both stamped by one storage), else replaces again.
    token_time = Path(plan["token_file"]).stat().st_mtime
    replaced = all(
        (cfg.ckpt_dir(r) / "config.json").exists()
        and (cfg.ckpt_dir(r) / "config.json").stat().st_mtime >= token_time
        for r in rs
    )
    overwrite = overwrite and not replaced
    summaries = train_repetitions(cfg, rs, data_manifest, log, overwrite=overwrite)
    log(f"done repetitions={','.join(str(s['r']) for s in summaries)} epochs={cfg.epochs}")
    return 0


class Supervisor:
    """Detached actor that owns one launch's tasks and records each job's exit code."""

    def __init__(self):
        self.running = self.stopping = False
        self.pending = []

    def has_started(self) -> bool:
        return self.running

    def cancel(self, timeout_s: float) -> int:
        """Kill the launch's tasks and wait until they are gone (stop's first step); their count."""
        import ray

        self.stopping = True
        refs = list(self.pending)
        for ref in refs:
            ray.cancel(ref, force=True)  # a cancelled task is not retried
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        return len(refs)

    def run(self, cfg_values: dict, blocks, overwrite: bool, plan: dict, resources: dict, retries):
        import ray

        from mach.files import write_text_atomic

        self.running = True
        jobs = job_dir(config_from_dict(cfg_values))
        # max_calls=1: a fresh process per task, so TensorFlow starts with this task's threads.
        task = ray.remote(max_calls=1)(train_block)
        names = {}
        for rs in blocks:
            ref = task.options(
                name=f"{cfg_values['name']}-{job_name(rs)}",
                max_retries=retries,
                retry_exceptions=False,  # an error in the code or data is final, a lost process not
                **resources,
            ).remote(cfg_values, rs, overwrite, plan)
            names[ref] = job_name(rs)
        self.pending = list(names)
        while self.pending:
            (done,), self.pending = ray.wait(self.pending, num_returns=1)
            if self.stopping:
                continue  # stopped: the jobs end without an exit code, as their status says
            try:
                code, note = ray.get(done), None
            except ray.exceptions.RayTaskError as err:
                code, note = 1, f"error: {type(err.cause).__name__}: {err.cause}"
            except ray.exceptions.RayError as err:
                code = 137  # as a shell reports a killed process
                note = (
                    f"ray: the task's process or node died {retries + 1} times "
                    f"({type(err).__name__}); retries exhausted: launch again to resume it"
                )
            if note:
                with open(jobs / f"{names[done]}.log", "a") as f:
                    f.write(note + "\n")
            write_text_atomic(jobs / f"{names[done]}.exit", f"{code}\n")
        ray.actor.exit_actor()


def supervisor(ray, cfg):
    """The running launch's actor, or None."""
    try:
        return ray.get_actor(launch_name(cfg), namespace=NAMESPACE)
    except ValueError:
        return None


def report(cfg, running: bool) -> int:
    """train.sh's report: one line per job; 1 when a job failed."""
    jobs, failed = job_dir(cfg), []
    if not list(jobs.glob("*.job")):
        print(f"no jobs of {cfg.name} in {cfg.work_dir} (nothing launched there on Ray)")
    for job in sorted(jobs.glob("*.job")):
        name, log = job.stem, jobs / f"{job.stem}.log"
        exit_file = jobs / f"{name}.exit"
        if exit_file.exists():
            code = exit_file.read_text().strip()
            if code == "0":
                print(f"{name} done")
                continue
            print(f"{name} FAILED exit={code} (log: {log})")
        elif running and (jobs / f"{name}.attempts").exists():
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            epochs = [line for line in lines if line.startswith("epoch=")]
            print(f"{name} running: {epochs[-1] if epochs else 'starting'}")
            continue
        elif running:
            print(f"{name} waiting for a free slot on the cluster")
            continue
        else:
            print(f"{name} FAILED: the launch ended without an exit code (stopped?)")
        failed.append(job.read_text().strip())
    if failed:
        print(f"failed repetitions: {' '.join(failed)}")
        return 1
    return 0


def wait_and_report(ray, cfg) -> int:
    while supervisor(ray, cfg) is not None:
        time.sleep(POLL_S)
    return report(cfg, running=False)


def show_logs(cfg, lines: int) -> int:
    for job in sorted(job_dir(cfg).glob("*.job")):
        log = job.with_suffix(".log")
        print(f"==> {log} <==")
        if log.exists():
            print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return 0


def stop(ray, cfg) -> int:
    actor = supervisor(ray, cfg)
    if actor is None:
        print(f"no Ray launch of {cfg.name} is running ({launch_name(cfg)})")
        return 0
    try:
        # The tasks are killed first and waited for, so none writes after --stop returns.
        ray.get(actor.cancel.remote(STOP_TIMEOUT_S), timeout=STOP_TIMEOUT_S + 10)
    except (ray.exceptions.RayError, TimeoutError):
        pass  # the actor is gone or stuck: killing it below ends its tasks too
    ray.kill(actor, no_restart=True)
    for _ in range(30):
        if supervisor(ray, cfg) is None:
            break
        time.sleep(0.5)
    print(f"stopped {launch_name(cfg)} and its tasks")
    return 0


def unfinished(cfg, R: int, overwrite: bool, log) -> list[int]:
    """Repetitions to launch: all with --overwrite, else those without a finished model."""
    if overwrite:
        return list(range(R))
    from mach.checkpoints import complete_epochs
    from mach.data.prepare import load_data_manifest, load_lookups
    from mach.identity import check_repetition, data_fingerprint

    data = data_fingerprint(load_data_manifest(cfg))
    todo = []
    for r in range(R):
        epochs = complete_epochs(cfg.ckpt_dir(r))
        if epochs:
            # A model of another config is refused now, as train.py would refuse to resume it.
            check_repetition(cfg, r, load_lookups(cfg, r)[2], data, "resume")
        if epochs and epochs[-1] >= cfg.epochs:
            log(f"already_trained repetition={r} epochs={epochs[-1]}: not launched")
        else:
            todo.append(r)
    return todo


def launch(ray, args, cfg, extra: list[str], threads_set: bool, log) -> int:
    jobs = job_dir(cfg)
    if supervisor(ray, cfg) is not None:
        if args.wait:
            return wait_and_report(ray, cfg)
        raise ValueError(
            f"jobs of {cfg.name} are still running on Ray ({launch_name(cfg)}); use --status, "
            "--logs, --wait or --stop"
        )
    # Preprocess once here (a no-op when up to date), as train.sh does, before any task starts.
    cmd = [sys.executable, str(CLONE / "preprocess.py"), "--dataset", args.dataset]
    cmd += ["--work-dir", cfg.work_dir, *(["--set", f"R={cfg.R}"] if cfg.R else []), *extra]
    done = subprocess.run(cmd)
    if done.returncode != 0:
        return done.returncode
    from mach.data.prepare import load_data_manifest, with_data_sizes

    data_manifest = load_data_manifest(cfg)
    cfg_sized = with_data_sizes(cfg, data_manifest)
    cfg = dataclasses.replace(cfg, R=cfg_sized.R)  # R chosen from the data where it was left open
    plan = storage_plan(cfg_sized, data_manifest, cfg.R, secrets.token_hex(16))
    for directory in plan["writes"]:
        Path(directory).mkdir(parents=True, exist_ok=True)
    Path(plan["token_file"]).write_text(plan["token"])
    nodes = check_nodes(ray, plan)
    log(f"storage_checked nodes={len(nodes)} ({', '.join(nodes)}) work_dir={cfg.work_dir}")

    blocks = cut_blocks(unfinished(cfg_sized, cfg.R, args.overwrite, log), args.block)
    for pattern in ["*.job", "*.exit", "*.attempts"]:
        for path in jobs.glob(pattern):
            path.unlink()
    (jobs / "launch.R").write_text(f"{cfg.R}\n")
    if not blocks:
        print(f"all {cfg.R} repetitions of {cfg.name} are trained; nothing to launch")
        return 0
    gpus = ray.cluster_resources().get("GPU", 0) > 0 and args.gpus != "none"
    resources = {"num_cpus": args.cpus_per_task, "num_gpus": 1 / args.per_gpu if gpus else 0}
    if not threads_set:  # as train.sh: all threads next to a GPU, else the task's CPUs
        cfg = dataclasses.replace(cfg, threads=0 if gpus else args.cpus_per_task)
    for rs in blocks:
        (jobs / f"{job_name(rs)}.job").write_text(
            (f"{rs[0]}-{rs[-1]}" if len(rs) > 1 else f"{rs[0]}") + "\n"
        )
    # Two threads: run() supervises while has_started() answers.
    actor = (
        ray.remote(num_cpus=0, max_restarts=0, max_concurrency=2)(Supervisor)
        .options(name=launch_name(cfg), namespace=NAMESPACE, lifetime="detached")
        .remote()
    )
    actor.run.remote(dataclasses.asdict(cfg), blocks, args.overwrite, plan, resources, args.retries)
    # A call still queued here would die with this process: return only once run() is under way.
    deadline = time.time() + PROBE_TIMEOUT_S
    while not ray.get(actor.has_started.remote()):
        if time.time() > deadline:
            ray.kill(actor)
            raise ValueError(f"the launch did not start on Ray within {PROBE_TIMEOUT_S} s")
        time.sleep(0.2)
    device = f"gpu/{args.per_gpu}" if gpus else f"cpu x{args.cpus_per_task}"
    for rs in blocks:
        print(
            f"started {launch_name(cfg)} {job_name(rs)} repetitions={rs[0]}-{rs[-1]} "
            f"device={device} retries={args.retries} log={jobs / job_name(rs)}.log"
        )
    if not args.wait:
        same = f"--dataset {cfg.name} --work-dir {cfg.work_dir} --ray {args.ray}"
        print(f"follow with: {CLONE / 'train.sh'} {same} --status (or --wait, --logs, --stop)")
        return 0
    return wait_and_report(ray, cfg)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a positive integer")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text}: expected a non-negative integer")
    return int(text)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    own, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m mach.distributed.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="After --: --set KEY=VALUE and --data-dir, passed to preprocess and training.",
    )
    parser.add_argument("--ray", required=True, metavar="ADDRESS", help="HOST:PORT or 'auto'")
    parser.add_argument("--dataset", default="delicious", help="preset from config.py")
    parser.add_argument(
        "--R", type=_positive, help="repetitions (default: last launch, else preset)"
    )
    parser.add_argument("--per-gpu", type=_positive, default=2, help="tasks per GPU (default 2)")
    parser.add_argument("--gpu-mem", type=_positive, metavar="MB", help="GPU memory cap per task")
    parser.add_argument("--gpus", help="'none': CPU tasks on a cluster with GPUs")
    parser.add_argument("--jobs", type=_positive, help=argparse.SUPPRESS)
    parser.add_argument("--cpus-per-task", type=_positive, default=1, help="and TF threads (1)")
    parser.add_argument("--block", type=_positive, default=1, help="repetitions per task (1)")
    parser.add_argument(
        "--retries", type=_non_negative, default=3, help="per task, when it dies (3)"
    )
    parser.add_argument("--work-dir", default="work", help="on storage every node mounts")
    parser.add_argument("--resume", action="store_true", help="the default; kept as in train.sh")
    parser.add_argument("--overwrite", action="store_true", help="retrain trained repetitions")
    parser.add_argument("--wait", action="store_true", help="wait; exit 1 naming failed ones")
    verb = parser.add_mutually_exclusive_group()
    verb.add_argument("--status", action="store_true", help="running / done / FAILED per job")
    verb.add_argument("--logs", type=_positive, nargs="?", const=10, metavar="N", help="log tails")
    verb.add_argument("--stop", action="store_true", help="kill the launch and its tasks")
    args = parser.parse_args(own)
    log = setup_logging().info
    return run_main(lambda: _run(args, extra, log))


def _run(args, extra: list[str], log) -> int:
    if args.jobs is not None:
        raise ValueError(
            "--jobs: on Ray the cluster's CPUs decide how many tasks run at once; "
            "use --cpus-per-task N for the CPUs (and threads) of each"
        )
    if args.gpus not in (None, "none"):
        raise ValueError(
            f"--gpus {args.gpus}: Ray gives each task its GPU share itself; use --per-gpu N, "
            "or --gpus none for CPU tasks"
        )
    base, presets = load_presets()
    flags = argparse.ArgumentParser(prog="train.sh ... --", add_help=False)
    add_config_flags(flags)
    passed = flags.parse_args(["--dataset", args.dataset, "--work-dir", args.work_dir, *extra])
    launch_R = job_dir(config_from_args(passed, base, presets)) / "launch.R"
    R = args.R
    if R is None and launch_R.is_file() and not (args.status or args.stop or args.logs):
        R = int(launch_R.read_text())
        print(f"R={R} (from the last launch, {launch_R}; pass --R to change it)")
    # The same order as train.sh: its settings first, then the flags after --, which win.
    ours = ([f"R={R}"] if R else []) + ([f"gpu_memory_mb={args.gpu_mem}"] if args.gpu_mem else [])
    passed.overrides = [*ours, *passed.overrides]
    cfg = config_from_args(passed, base, presets)
    # Paths go to other machines: absolute, as every node sees them.
    cfg = dataclasses.replace(
        cfg,
        work_dir=str(Path(cfg.work_dir).resolve()),
        data_dir=str(Path(cfg.data_dir).resolve()),
    )
    if args.logs:
        return show_logs(cfg, args.logs)
    ray = connect(args.ray)
    if args.status:
        return report(cfg, running=supervisor(ray, cfg) is not None)
    if args.stop:
        return stop(ray, cfg)
    threads_set = any(pair.partition("=")[0].strip() == "threads" for pair in passed.overrides)
    return launch(ray, args, cfg, extra, threads_set, log)


if __name__ == "__main__":
    sys.exit(main())
