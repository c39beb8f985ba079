"""No orphans: every worker process dies with the process that started it, whatever kills it (SIGKILL included), and a
worker that dies or hangs ends the run with a clear message instead of a hang (fastpose/workers.py).

Worker pids come from the workers themselves (FASTPOSE_WORKER_PID_DIR: each writes "<role> <parent pid>" into a file
named by its pid), never from matching process names. Linux only: the checks read /proc.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastpose import config
from fastpose.checkpoint import save_snapshot
from fastpose.convert import mat, synth
from fastpose.convert.common import Entry, convert_entries, load_image_entry
from fastpose.errors import UserError
from fastpose.model import build_model
from fastpose.pipeline import build_loader
from fastpose.shards import ShardWriter
from fastpose.workers import PID_DIR_ENV, exit_reason

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; prctl is Linux's")

TORCHRUN = Path(sys.executable).with_name("torchrun")

CFG = """\
dataset: {data}
num_joints: 11
net_type: resnet_18
freeze_bn: false
pos_dist_thresh: 10
optimizer: sgd
multi_step: [[0.01, 1000]]
batch_size: 2
display_iters: 1
save_iters: 2
num_workers: 2
num_threads: 1
channels_last: false
deterministic: true
seed: 3
device: cpu
out_dir: {out}
"""


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is no zombie (an orphaned zombie waits for init, which may be slow to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"  # the state letter follows "(comm) "


def recorded(pid_dir: Path) -> dict[int, tuple[str, int]]:
    """pid -> (role, parent pid) of every worker that has started (files written by fastpose.workers)."""
    out = {}
    for f in pid_dir.iterdir():
        text = f.read_text().split()
        if len(text) >= 2:  # a file being written may still be empty
            out[int(f.name)] = (" ".join(text[:-1]), int(text[-1]))
    return out


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended (status {proc.returncode}) before {what}: "
                                 f"{proc.communicate()[1][-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_all_gone(pids, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    survivors = [p for p in pids if alive(p)]
    for p in survivors:  # never leave them to the next test
        os.kill(p, signal.SIGKILL)
    assert survivors == [], f"still alive {within} s after their parent was killed: {survivors}"


def start(args, pid_dir: Path, **kw) -> subprocess.Popen:
    pid_dir.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", **{PID_DIR_ENV: str(pid_dir)})
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """200 synthetic images (160-200 px) as a .mat and as shards (100 train, 100 test)."""
    root = tmp_path_factory.mktemp("workers")
    mat_path = synth.make_dataset(root / "synth", n=200, seed=5, sizes=(160, 200))
    mat.convert(mat_path, root / "shards", num_joints=11, split="train=0.5,test=0.5", quiet=True, workers=1)
    return root


# ---------------------------------------------------------------------------------------------------------------------
# The mechanism, on a bare multiprocessing child.

CHILD = """\
import multiprocessing as mp, os, sys, time
from fastpose.workers import die_with_parent

def work(parent, bind, late):
    if late:  # bind only once the parent is gone: the pid check must catch it
        while os.getppid() == parent:
            time.sleep(0.01)
    if bind:
        die_with_parent(parent, "test worker")
    if not late and not bind:
        open(os.path.join(os.environ["FASTPOSE_WORKER_PID_DIR"], str(os.getpid())), "w").write("unbound %d" % parent)
    if late:
        open(sys.argv[1], "w").write("survived the check")
    time.sleep(60)

if __name__ == "__main__":
    p = mp.get_context("fork").Process(target=work, args=(os.getpid(), sys.argv[2] == "1", sys.argv[3] == "1"))
    p.start()
    open(os.path.join(os.environ["FASTPOSE_WORKER_PID_DIR"], "child"), "w").write(str(p.pid))
    time.sleep(60)
"""


def _child_run(tmp_path, bind: bool, late: bool):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    pids = tmp_path / "pids"
    proc = start([sys.executable, str(script), str(tmp_path / "late.txt"), str(int(bind)), str(int(late))], pids)
    child = int(wait_for(lambda: (pids / "child").exists() and (pids / "child").read_text(), 30, "the child", proc))
    if not late:
        wait_for(lambda: recorded(pids), 30, "the child's pid file", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return child, pids


def test_a_bound_child_dies_with_its_parent_and_an_unbound_one_does_not(tmp_path):
    (tmp_path / "bound").mkdir()
    child, pids = _child_run(tmp_path / "bound", bind=True, late=False)
    assert recorded(pids) == {child: ("test worker", recorded(pids)[child][1])}
    assert_all_gone([child])
    # The control: the same child without the binding outlives its parent (what the issue saw).
    (tmp_path / "free").mkdir()
    child, _ = _child_run(tmp_path / "free", bind=False, late=False)
    time.sleep(1.0)
    assert alive(child)
    os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_died_before_the_binding_exits_at_once(tmp_path):
    child, _ = _child_run(tmp_path, bind=True, late=True)
    assert_all_gone([child])
    assert not (tmp_path / "late.txt").exists()


def test_exit_reason_words():
    assert exit_reason(-9) == "was killed by signal 9 (SIGKILL)"
    assert exit_reason(-11) == "was killed by signal 11 (SIGSEGV)"
    assert exit_reason(3) == "exited with status 3"
    assert exit_reason(None) == "is still running"


STUCK = """\
import time
from fastpose.workers import Watchdog

w = Watchdog(0, lambda: print("on_timeout", flush=True), lambda: "the wait is stuck", grace=0.3)
w.start()
w.stop()  # a wait that ended: no bound without a timeout, nothing fires
time.sleep(0.3)
w.start()
w.cut(0.4)  # a worker died: the wait in progress may last 0.4 s more
time.sleep(30)  # stuck for good (as on the lock of a killed worker)
"""


def test_a_wait_that_cannot_end_exits_with_the_message():
    start_time = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=20)
    elapsed = time.monotonic() - start_time
    assert done.returncode == 2
    assert done.stdout == "on_timeout\n" and done.stderr == "error: the wait is stuck\n"
    assert 0.3 + 0.4 + 0.3 <= elapsed < 10  # the first sleep, the cut bound, the grace


def test_worker_timeout_is_validated():
    assert config.load(None, worker_timeout=2).worker_timeout == 2.0
    with pytest.raises(UserError, match="worker_timeout = -1.0 is not allowed"):
        config.load(None, worker_timeout=-1)


# ---------------------------------------------------------------------------------------------------------------------
# A dead or stuck worker: a clear message, not a hang.


def _loader(data, pid_dir: Path, monkeypatch, **extra):
    pid_dir.mkdir()
    monkeypatch.setenv(PID_DIR_ENV, str(pid_dir))
    cfg = config.load(None, dataset=str(data / "shards"), num_joints=11, batch_size=2, num_workers=2, num_threads=1,
                      device="cpu", seed=0, **extra)
    return build_loader(cfg, data / "shards", "train")


LOADER = """\
import os, signal, sys, time
from fastpose import config
from fastpose.errors import UserError
from fastpose.pipeline import build_loader

shards, how, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
cfg = config.load(None, dataset=shards, num_joints=11, batch_size=2, num_workers=2, num_threads=1, device="cpu",
                  seed=0, worker_timeout=timeout)
loader = build_loader(cfg, shards, "train")
print(" ".join(str(p.pid) for p in loader.workers), flush=True)
batches = iter(loader)
next(batches)
for p in loader.workers if how == "stop" else loader.workers[1:]:
    os.kill(p.pid, signal.SIGSTOP if how == "stop" else signal.SIGKILL)
t = time.monotonic()
try:
    while True:
        try:
            next(batches)
        except StopIteration:
            batches = iter(loader)
except UserError as e:
    print(f"{time.monotonic() - t:.2f}", flush=True)
    sys.stderr.write(f"error: {e}\\n")
    sys.exit(2)
"""


def _loader_run(data, tmp_path, how: str, timeout: float):
    """A loader in its own process (a wait stuck on a dead worker's lock ends in os._exit(2), which must not end
    pytest): (status, worker pids, stderr as one line)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, **{PID_DIR_ENV: str(pids)})
    done = subprocess.run([sys.executable, "-c", LOADER, str(data / "shards"), how, str(timeout)], capture_output=True,
                          text=True, timeout=120, env=env)  # a hang fails here
    workers = [int(p) for p in done.stdout.split("\n")[0].split()]
    assert sorted(recorded(pids)) == workers  # bound at their start, before any task
    assert_all_gone(workers)
    return done.returncode, workers, " ".join(done.stderr.split())


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_names_itself(data, tmp_path):
    status, pids, err = _loader_run(data, tmp_path, "kill", 0)  # no timeout: the death alone must end the wait
    assert status == 2, err
    assert f"error: Data worker 2 of 2 (pid {pids[1]}) of the training data loader of {data / 'shards'}" in err
    assert "was killed by signal 9 (SIGKILL)" in err and "out-of-memory killer" in err and "--resume" in err


@pytest.mark.slow
def test_a_stuck_worker_ends_in_the_timeout_message(data, tmp_path):
    status, pids, err = _loader_run(data, tmp_path, "stop", 1.5)  # SIGSTOP: alive but never answering (a hung read)
    assert status == 2, err
    assert "error: No batch came from the training data loader" in err and "for 1.5 s (worker_timeout)" in err
    assert f"(pids {pids[0]}, {pids[1]}) is stuck" in err
    assert "killed by" not in err  # the watchdog's own kills are not reported as the cause


@pytest.mark.slow
def test_spawned_workers_are_bound_at_their_start(data, tmp_path, monkeypatch):
    """On a GPU the workers are spawned: they bind when they unpickle the source, before any task."""
    monkeypatch.setenv("FASTPOSE_WORKER_START", "spawn")
    with _loader(data, tmp_path / "pids", monkeypatch) as loader:
        assert recorded(tmp_path / "pids") == {p.pid: ("data worker", os.getpid()) for p in loader.workers}
        assert len(loader.workers) == 2


@pytest.mark.slow
def test_a_dropped_loader_still_stops_its_workers(data, tmp_path, monkeypatch):
    """The watchdog's threads must not keep a loader (and so its pipeline and workers) alive."""
    loader = _loader(data, tmp_path / "pids", monkeypatch, worker_timeout=60)
    procs = list(loader.workers)
    next(iter(loader))
    del loader
    gc.collect()
    wait_for(lambda: all(p.exitcode is not None for p in procs), 10, "the workers to stop")


def _suicide_at_5(entry: Entry):
    """A convert load function whose worker dies hard on entry 5 (what a native decoder crash or the OOM killer do)."""
    if entry.index == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return load_image_entry(entry)


def test_a_dead_convert_worker_is_reported(data, tmp_path):
    entries = [Entry(index=i, image_path=p, joints=np.zeros((1, 11, 3), np.float32))
               for i, p in enumerate(sorted((data / "synth" / "images").glob("*.png"))[:16])]
    writer = ShardWriter(tmp_path / "out", 11)
    with pytest.raises(UserError, match=r"convert worker \d of 2 \(pid \d+\) was killed by signal 9 \(SIGKILL\)"):
        convert_entries(entries, writer, source="test.mat", load=_suicide_at_5, workers=2, quiet=True)
    assert not (tmp_path / "out" / "manifest.json").exists()


# ---------------------------------------------------------------------------------------------------------------------
# The commands, killed with SIGKILL: nothing of the run survives.


def train_until_first_snapshot(data, tmp_path):
    """`fastpose train` started in a subprocess, its workers recording their pids, once snapshot-2 exists:
    (the process, the pid folder)."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CFG.format(data=data / "shards", out=tmp_path / "run"))
    pids = tmp_path / "pids"
    proc = start([sys.executable, "-m", "fastpose", "train", str(cfg)], pids)
    wait_for(lambda: (tmp_path / "run" / "snapshot-2.pt").exists(), 240, "the first snapshot", proc)
    return proc, pids


@pytest.mark.slow
def test_train_killed_after_its_first_snapshot_leaves_no_worker(data, tmp_path):
    proc, pids = train_until_first_snapshot(data, tmp_path)
    workers = recorded(pids)
    assert len(workers) == 2 and {parent for _, parent in workers.values()} == {proc.pid}
    os.kill(proc.pid, signal.SIGKILL)  # the trainer alone, not its process group
    proc.wait()
    assert_all_gone(list(workers))


@pytest.mark.slow
def test_a_worker_killed_during_training_stops_it_with_the_message(data, tmp_path):
    proc, pids = train_until_first_snapshot(data, tmp_path)
    workers = sorted(recorded(pids))
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)  # a hang fails here (the bound after a death: 2 s + 5 s of grace)
    assert proc.returncode == 2, err[-3000:]
    message = " ".join(err.split())
    assert f"(pid {workers[0]}) of the training data loader" in message and "SIGKILL" in message
    assert "Traceback" not in err
    assert_all_gone(workers)


@pytest.mark.slow
def test_eval_killed_leaves_no_worker(data, tmp_path):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(CFG.format(data=data / "shards", out=tmp_path / "run"))
    cfg = config.load(cfg_path)
    snap = save_snapshot(tmp_path / "run", 1, model=build_model(cfg), optimizer=None, cfg=cfg, data_position={})
    pids = tmp_path / "pids"
    proc = start([sys.executable, "-m", "fastpose", "eval", str(cfg_path), "--checkpoint", str(snap), "--split", "test",
                  "--batch-size", "1", "--set", "global_scale=2"], pids)
    workers = wait_for(lambda: len(recorded(pids)) == 2 and recorded(pids), 120, "2 data workers", proc)
    assert proc.poll() is None  # still evaluating: the kill below is mid-run
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {parent for _, parent in workers.values()} == {proc.pid}
    assert_all_gone(list(workers))


@pytest.mark.slow
def test_convert_killed_leaves_no_worker(data, tmp_path):
    pids = tmp_path / "pids"
    proc = start([sys.executable, "-m", "fastpose", "convert", "mat", str(data / "synth" / "dataset.mat"), "--out",
                  str(tmp_path / "shards"), "--num-joints", "11", "--workers", "2", "--reencode-jpeg", "95"], pids)
    workers = wait_for(lambda: len(recorded(pids)) == 2 and recorded(pids), 120, "2 convert workers", proc)
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {role for role, _ in workers.values()} == {"convert worker"}
    assert_all_gone(list(workers))
    assert not (tmp_path / "shards" / "manifest.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside this python")
def test_torchrun_rank_killed_takes_everything_down(data, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CFG.format(data=data / "shards", out=tmp_path / "run"))
    pids = tmp_path / "pids"
    proc = start([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "fastpose", "train", str(cfg)], pids,
                 cwd=tmp_path)
    wait_for(lambda: (tmp_path / "run" / "snapshot-2.pt").exists(), 300, "the first snapshot", proc)
    workers = recorded(pids)
    ranks = sorted({parent for _, parent in workers.values()})
    assert len(workers) == 4 and len(ranks) == 2  # 2 ranks x 2 data workers
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=120)
    print(f"torchrun ended {time.monotonic() - killed:.1f} s after the kill, status {proc.returncode}")
    assert proc.returncode != 0
    assert_all_gone(ranks + list(workers))
