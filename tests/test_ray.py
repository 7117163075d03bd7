"""train.sh --ray and evaluate.py --ray on a local two-node Ray cluster.

Two `ray start` nodes of 1 CPU each on loopback addresses: R=4 repetitions in tasks of 2, one task
killed mid-epoch on its first attempt, retried and resumed; checkpoints byte-identical to train.py;
evaluation through Ray equal to the local one; status, logs and stop; and the clear errors for a bad
address, a node that cannot see the work directory, and Ray not installed.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import format_rows, make_rows, run_dir_of

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
HEAD_IP = (
    "127.0.0.2"  # loopback, but not the 127.0.0.1 that Ray swaps for this machine's own address
)
# checkpoint_interval_s=0: the kill-and-resume test needs epoch 1 saved.
SETTINGS = {"B": 8, "hidden": (16,), "epochs": 2, "batch_size": 16, "eval_batch_size": 8}
SETTINGS["checkpoint_interval_s"] = 0.0

needs_ray = pytest.mark.skipif(
    not RAY.exists(), reason="Ray is not installed (pip install -e .[ray]; CI installs it)"
)

# Imported by every Python process of the cluster's nodes (PYTHONPATH): the task that trains
# repetition MACH_TEST_KILL_R kills its process at its MACH_TEST_KILL_STEP-th step, once (a marker).
KILL_HOOK = """
import importlib.abc, importlib.machinery, os, signal, sys

class _KillMidEpoch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "mach.training":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            make = module._make_train_step

            def dying(cfg, reps, *inputs):
                step, calls = make(cfg, reps, *inputs), [0]

                def wrapped(batch):
                    calls[0] += 1
                    marker = os.environ["MACH_TEST_KILL_MARKER"]
                    kill = int(os.environ["MACH_TEST_KILL_R"]) in [rep.r for rep in reps]
                    if kill and calls[0] == int(os.environ["MACH_TEST_KILL_STEP"]):
                        if not os.path.exists(marker):
                            open(marker, "w").write(str(os.getpid()))
                            os.kill(os.getpid(), signal.SIGKILL)
                    return step(batch)

                return wrapped

            module._make_train_step = dying

        spec.loader.exec_module = exec_module
        return spec

if os.environ.get("MACH_TEST_KILL_R"):
    sys.meta_path.insert(0, _KillMidEpoch())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(temp_dir: Path, head: str, env=None, prefix=(), is_head=False) -> None:
    """`ray start` one node of 1 CPU and a small object store, every port chosen here."""
    ports = ["node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc"]
    ports += ["runtime-env-agent", "metrics-export"]
    cmd = [*prefix, str(RAY), "start", "--num-cpus", "1", "--object-store-memory", str(100 << 20)]
    cmd += ["--disable-usage-stats", *(f"--{p}-port={free_port()}" for p in ports)]
    if is_head:
        port = head.rpartition(":")[2]
        cmd += ["--head", "--node-ip-address", HEAD_IP, "--port", port, "--temp-dir", str(temp_dir)]
        cmd += ["--include-dashboard=false", f"--dashboard-port={free_port()}"]
        cmd += [f"--ray-client-server-port={free_port()}"]
    else:
        cmd += ["--address", head]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def node_processes(*markers: str) -> set[int]:
    """Processes whose command line names a marker (the cluster's temp dir or address), and their
    descendants."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            procs[int(entry.name)] = (ppid, cmd)
    ours, pid = set(), os.getpid()
    while pid in procs:  # never this test process or its parents
        ours.add(pid)
        pid = procs[pid][0]
    found = {pid for pid, (_, cmd) in procs.items() if any(m in cmd for m in markers)} - ours
    while True:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in found} - found - ours
        if not children:
            return found
        found |= children


def kill_processes(*markers: str) -> None:
    """Stop the cluster's processes by pid (not `ray stop`: it stops every Ray on the machine)."""
    for sig in [signal.SIGTERM, signal.SIGKILL]:
        for pid in node_processes(*markers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # A short temp dir: Ray's unix sockets live under it, and their paths have a length limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="mray", dir="/tmp"))
    hook = tmp_path_factory.mktemp("hook")
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    marker = hook / "killed"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
        MACH_TEST_KILL_R="2",
        MACH_TEST_KILL_STEP="6",  # epoch 1 has 4 steps of 16 rows: this is the middle of epoch 2
        MACH_TEST_KILL_MARKER=str(marker),
    )
    address, start = f"{HEAD_IP}:{free_port()}", time.time()
    try:
        start_node(temp_dir, address, env=env, is_head=True)
        started_head = time.time() - start
        start_node(temp_dir, address, env=env)
        print(
            f"ray_start head_s={started_head:.1f} worker_s={time.time() - start - started_head:.1f}"
        )
        yield {"address": address, "temp_dir": temp_dir, "marker": marker}
    finally:
        # The temp dir names most of the cluster's processes; the head's address the rest.
        kill_processes(str(temp_dir), f"{address} ")
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tinyray")
    (root / "train.txt").write_text(format_rows(make_rows(64, seed=1)))
    (root / "test.txt").write_text(format_rows(make_rows(32, seed=2)))
    return {"root": root, "train": root / "train.txt", "test": root / "test.txt"}


def settings(tiny, **overrides) -> list[str]:
    sets = {
        "train_file": str(tiny["train"]),
        "test_file": str(tiny["test"]),
        **SETTINGS,
        **overrides,
    }
    return [arg for key, value in sets.items() for arg in ["--set", f"{key}={value!r}"]]


def launcher(address, work, *flags, tiny=None, extra=None, timeout=300):
    """python -m mach.distributed.launch (what train.sh --ray runs), on dataset tinyray."""
    cmd = [
        sys.executable,
        "-m",
        "mach.distributed.launch",
        "--ray",
        address,
        "--dataset",
        "tinyray",
    ]
    cmd += ["--work-dir", str(work), *flags, "--", *(extra or settings(tiny))]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work.parent)


@pytest.fixture(scope="module")
def trained(cluster, tiny):
    """train.sh --ray, R=4 in blocks of 2 (the task of r=2-3 killed once); beside it, train.py."""
    work, reference = tiny["root"] / "work", tiny["root"] / "reference"
    # The reference: train.sh's job on a CPU, all repetitions in one train.py (grouping changes no
    # weight), run meanwhile in another work directory.
    flags = ["--dataset", "tinyray", "--work-dir", str(reference), *settings(tiny, R=4, threads=1)]
    steps = [
        [sys.executable, str(REPO / script), *flags] for script in ["preprocess.py", "train.py"]
    ]
    ref = subprocess.Popen(
        ["bash", "-c", " && ".join(map(shlex.join, steps))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = time.time()
    done = subprocess.run(
        ["bash", str(REPO / "train.sh"), "--ray", cluster["address"], "--dataset", "tinyray"]
        + ["--R", "4", "--block", "2", "--work-dir", str(work), "--wait", "--", *settings(tiny)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable),
        timeout=600,
    )
    print(f"ray_train_s={time.time() - start:.1f}")
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    return {"done": done, "work": work, "reference": reference}


def run_dir(work: Path) -> Path:
    return run_dir_of(work, "tinyray")


@pytest.mark.slow
@needs_ray
def test_a_killed_task_is_retried_resumed_and_ends_byte_identical_to_train_py(cluster, trained):
    done = trained["done"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "storage_checked nodes=2" in done.stdout
    assert "r00-01 repetitions=0-1" in done.stdout and "r02-03 repetitions=2-3" in done.stdout
    assert [line for line in done.stdout.splitlines() if line.endswith(" done")] == [
        "r00-01 done",
        "r02-03 done",
    ]
    # The task of r=2-3 died in the middle of epoch 2 on its first attempt; Ray ran it again.
    assert cluster["marker"].exists()
    log = (trained["work"] / "tinyray" / "ray-jobs" / "r02-03.log").read_text()
    assert "attempt=1" in log and "attempt=2" in log and "epoch=2" in log
    assert "resumed_from_epochs=" in log and "Sharding callback" not in log
    pids = {line.split("pid=")[1].split()[0] for line in log.splitlines() if "ray_task" in line}
    assert len(pids) == 2  # a fresh process for the retry

    ours, theirs = run_dir(trained["work"]) / "ckpt", run_dir(trained["reference"]) / "ckpt"
    for r in range(4):
        names = sorted(p.name for p in (theirs / f"r{r:02d}").glob("ckpt-2.*"))
        assert names == ["ckpt-2.data-00000-of-00001", "ckpt-2.index"]
        for name in names:
            assert (ours / f"r{r:02d}" / name).read_bytes() == (
                theirs / f"r{r:02d}" / name
            ).read_bytes(), f"r={r} {name}"


@pytest.mark.slow
@needs_ray
def test_evaluation_through_ray_equals_local_evaluation(cluster, tiny, trained):
    import evaluate

    work = trained["work"]
    flags = ["--dataset", "tinyray", "--work-dir", str(work), *settings(tiny, R=4), "--sweep-R"]
    assert evaluate.main(flags) == 0
    metrics = json.loads((run_dir(work) / "metrics.json").read_text())
    # Two groups of two repetitions: one actor on each node.
    cmd = [sys.executable, str(REPO / "evaluate.py"), *flags, "--ray", cluster["address"]]
    remote = subprocess.run(cmd + ["--set", "eval_group_size=2"], capture_output=True, text=True)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    through_ray = json.loads((run_dir(work) / "metrics.json").read_text())
    assert through_ray["metrics"] == metrics["metrics"]
    assert through_ray["sweep_R"] == metrics["sweep_R"]
    assert through_ray["placement"]["groups"] == 2 and through_ray["R"] == 4
    assert len({d.split(":")[0] for d in through_ray["placement"]["devices"]}) == 2
    assert set(through_ray["sweep_R"]) == {"1", "2", "4"}


@pytest.mark.slow
@needs_ray
def test_a_relaunch_launches_nothing_and_refuses_another_config(cluster, tiny, trained):
    work = trained["work"]
    again = launcher(cluster["address"], work, "--wait", tiny=tiny)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "R=4 (from the last launch" in again.stdout
    assert "already_trained repetition=3 epochs=2: not launched" in again.stdout
    assert "all 4 repetitions of tinyray are trained; nothing to launch" in again.stdout
    status = launcher(cluster["address"], work, "--status", tiny=tiny)
    assert status.returncode == 0 and "no jobs of tinyray" in status.stdout, status.stdout
    # Another model where the trained ones are: refused before anything starts, as train.py does.
    run = f"run={run_dir_of(work, 'tinyray').name}"
    other = launcher(cluster["address"], work, extra=[*settings(tiny, hidden=(32,)), "--set", run])
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "cannot resume" in other.stderr and "hidden: trained with [16], now [32]" in other.stderr


@pytest.mark.slow
@needs_ray
def test_status_logs_and_stop_of_a_running_launch(cluster, tiny, trained):
    work = trained["work"]
    extra = settings(tiny, tag="long", epochs=100_000)
    started = launcher(cluster["address"], work, "--R", "2", extra=extra)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"follow with: {REPO / 'train.sh'} --dataset tinyray --work-dir {work}" in started.stdout
    jobs = work / "tinyray" / "ray-jobs"
    for _ in range(120):  # until both tasks have started
        if all((jobs / f"r0{r}.attempts").exists() for r in range(2)):
            break
        time.sleep(0.5)
    status = launcher(cluster["address"], work, "--status", extra=extra)
    assert "r00 running: " in status.stdout and "r01 running: " in status.stdout, status.stdout
    again = launcher(cluster["address"], work, extra=extra)
    assert again.returncode == 2 and "still running on Ray" in again.stderr
    # Every line: the task's first line must be there however far its epochs have got.
    logs = launcher(cluster["address"], work, "--logs", "100000", extra=extra)
    assert (
        f"==> {jobs / 'r01.log'} <==" in logs.stdout and "ray_task job=r01 attempt=1" in logs.stdout
    )
    stopped = launcher(cluster["address"], work, "--stop", extra=extra)
    assert stopped.stdout.startswith("stopped mach-tinyray-"), stopped.stdout + stopped.stderr
    after = launcher(cluster["address"], work, "--status", extra=extra)
    assert "r00 FAILED: the launch ended without an exit code (stopped?)" in after.stdout
    assert "failed repetitions: 0 1" in after.stdout and after.returncode == 1
    time.sleep(1)  # the tasks died with the launch: their logs stop growing
    sizes = [(jobs / f"r0{r}.log").stat().st_size for r in range(2)]
    time.sleep(2)
    assert sizes == [(jobs / f"r0{r}.log").stat().st_size for r in range(2)]


@pytest.mark.slow
@needs_ray
def test_a_node_that_cannot_see_the_work_dir_stops_the_launch(cluster, tiny, trained):
    # A third node in its own mount namespace, where an empty tmpfs hides the work directory.
    work = trained["work"]
    hide = f'mount -t tmpfs tmpfs {work} && exec "$@"'
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", hide, "sh"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare -m and mount (root) to hide a directory from one node")
    ours = os.readlink("/proc/self/ns/mnt")
    jobs = {p: p.stat().st_mtime for p in (work / "tinyray" / "ray-jobs").glob("*.job")}
    try:
        start_node(cluster["temp_dir"], cluster["address"], prefix=prefix)
        refused = launcher(cluster["address"], work, "--overwrite", tiny=tiny)
    finally:  # the third node: the cluster's processes in the other mount namespace
        for pid in node_processes(str(cluster["temp_dir"])):
            try:
                if os.readlink(f"/proc/{pid}/ns/mnt") != ours:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert "nothing was launched: these nodes of the Ray cluster cannot use the shared storage" in (
        refused.stderr
    )
    assert f"cannot read {work}/tinyray/tfrecords/manifest.json (No such file" in refused.stderr
    assert "mount that directory at the same path on every node" in refused.stderr
    assert "storage_checked" not in refused.stdout and "started" not in refused.stdout
    assert jobs == {p: p.stat().st_mtime for p in (work / "tinyray" / "ray-jobs").glob("*.job")}


@pytest.mark.slow
@needs_ray
def test_a_bad_cluster_address_is_one_clear_error(tiny, tmp_path):
    closed = free_port()
    bad = launcher(f"127.0.0.1:{closed}", tmp_path / "work", tiny=tiny, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"error: cannot reach a Ray cluster at 127.0.0.1:{closed} (Connection refused)" in (
        bad.stderr
    )
    assert "ray start --head" in bad.stderr
    malformed = launcher("headnode", tmp_path / "work", "--status", tiny=tiny)
    assert malformed.returncode == 2 and "--ray headnode: expected HOST:PORT" in malformed.stderr


@pytest.mark.slow
def test_ray_not_installed_is_one_clear_error(tiny, tmp_path):
    """`import ray` fails (None in sys.modules): the launcher and evaluate.py say what to do."""
    no_ray = "import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
    work = tmp_path / "work"
    train = subprocess.run(
        [
            sys.executable,
            "-c",
            no_ray + "runpy.run_module('mach.distributed.launch', run_name='__main__')",
        ]
        + ["x", "--ray", "auto", "--dataset", "tinyray", "--work-dir", str(work), "--status"]
        + ["--", *settings(tiny)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    evaluate = subprocess.run(
        [
            sys.executable,
            "-c",
            no_ray + f"runpy.run_path({str(REPO / 'evaluate.py')!r}, " "run_name='__main__')",
        ]
        + ["x", "--ray", "auto", "--dataset", "tinyray", "--work-dir", str(work), *settings(tiny)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    for done in [train, evaluate]:
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert "error: Ray is not installed for" in done.stderr
        assert "pip install -e .[ray]" in done.stderr


def test_the_ray_driver_merges_within_the_budget():
    """The driver's merge steps shrink to what the budget leaves beside two batches in flight, give the
    batch's rows in order with all R side by side, and a batch that cannot fit is refused."""
    import dataclasses

    import numpy as np

    from mach.config import Config
    from mach.distributed.evaluation import driver_merge_rows, merge_steps

    cfg = dataclasses.replace(Config(), B=10, eval_batch_size=8)
    row_bytes, GiB, held = 6 * 10 * 4, 2**30, {"process": 1000, "lookups": 240}
    # Two batches of 8 rows in flight, then 3 rows twice: merge steps of 3.
    fits = dataclasses.replace(cfg, eval_budget_gb=(1240 + (2 * 8 + 2 * 3) * row_bytes) / GiB)
    assert driver_merge_rows(fits, 6, held) == 3
    roomy = dataclasses.replace(cfg, eval_budget_gb=1.0)
    assert driver_merge_rows(roomy, 6, held) == 8
    with pytest.raises(ValueError, match="besides process .* lookups .*: lower eval_batch_size"):
        driver_merge_rows(
            dataclasses.replace(cfg, eval_budget_gb=(1240 + 16 * row_bytes) / GiB), 6, held
        )

    rng = np.random.default_rng(0)
    pieces = [rng.standard_normal((8, g, 10), dtype=np.float32) for g in (2, 3, 1)]
    steps = list(merge_steps(pieces, 3))
    assert [len(s) for s in steps] == [3, 3, 2]
    np.testing.assert_array_equal(np.concatenate(steps), np.concatenate(pieces, axis=1))
