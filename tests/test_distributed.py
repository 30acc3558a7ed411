"""Scale-out: simulated devices, two jax.distributed processes, killed-and-resumed runs, preemption,
bad input, and the pod command through the launcher.

Simulated device counts and extra processes need a fresh JAX, so those checks run
``tests/dist_worker.py`` in subprocesses and compare with the single-device
``jacobian.region_grams`` computed here. The library checks are float64 on a 5-d toy generator with
8x8 images, so agreement is checked to round-off; the launcher checks run the float32 tiny StyleGAN2
fixture as N localhost processes on one shared work directory.
"""

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import dist_worker  # noqa: E402

from regfac_jax import distributed, io_utils, jacobian, resumable  # noqa: E402
from regfac_jax.jacobian import JacobianOptions  # noqa: E402

WORKER = pathlib.Path(dist_worker.__file__)
REPO = WORKER.parents[1]
from conftest import FIXTURES  # noqa: E402

# seconds per subprocess: generous for 2 shared cores, small enough to fail fast on a hang
TIMEOUT = 180


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if "xla_force_host_platform_device_count" not in f
    ]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def _worker(tmp_path, mode, *args, name=None, check=True):
    out = tmp_path / f"{name or mode}.npz"
    proc = subprocess.run(
        [sys.executable, str(WORKER), mode, "--out", str(out), *map(str, args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"worker {mode} {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return (dict(np.load(out)) if out.exists() else None), proc


CHUNK5 = JacobianOptions(tangent_chunk=5)


def _reference(n, per_sample=False, fns=None):
    fn, lat, masks = dist_worker.problem(n)
    if fns is None:
        return jacobian.region_grams(fn, jnp.asarray(lat), masks, CHUNK5, per_sample=per_sample)
    per = [jacobian.region_grams(f, jnp.asarray(lat[i]), masks, CHUNK5) for i, f in enumerate(fns)]
    return tuple(sum(p[k] for p in per) / n for k in (0, 1))


def _close(got, want, rel):
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=rel * np.abs(want).max())


# float64 sums of a handful of O(1) Grams, formed in another order (per device, then psum): a few
# ulps.
F64_REL = 1e-13


# --------------------------------------------------------------------------------------------------
# One process, this process's single device
# --------------------------------------------------------------------------------------------------
def test_single_device_matches_region_grams(x64):
    fn, lat, masks = dist_worker.problem(5)
    A, B = distributed.sharded_region_grams(fn, lat, masks, JacobianOptions(tangent_chunk=2))
    A0, B0 = _reference(5)
    assert (
        A.shape == B.shape == (2, dist_worker.LATENT_DIM, dist_worker.LATENT_DIM)
        and A.dtype == jnp.float64
    )
    _close(A, A0, F64_REL)
    _close(B, B0, F64_REL)
    Ap, Bp = distributed.sharded_region_grams(
        fn, lat, masks, JacobianOptions(tangent_chunk=2), per_sample=True
    )
    A0p, B0p = _reference(5, per_sample=True)
    assert Ap.shape == (5, 2, dist_worker.LATENT_DIM, dist_worker.LATENT_DIM)
    _close(Ap, A0p, F64_REL)
    _close(Bp, B0p, F64_REL)


def test_per_sample_functions_share_weights(x64):
    fn, lat, masks = dist_worker.problem(4)
    fns = dist_worker.per_sample_functions(fn, 4)
    plan = distributed.plan_grams(fns, lat, masks)
    # weights placed once, not per sample
    assert len(plan.functions.shared) == len(jax.tree_util.tree_leaves(fn))
    stacked = plan.functions.stacked
    # only the shifts travel per sample
    assert [s.shape for s in stacked] == [(4, dist_worker.LATENT_DIM)]
    A, B = distributed.sharded_region_grams(fns, lat, masks, JacobianOptions(tangent_chunk=5))
    A0, B0 = _reference(4, fns=fns)
    _close(A, A0, F64_REL)
    _close(B, B0, F64_REL)
    # distinct arrays with equal values (as latent_fn builds its masks per call) are shared too
    same = [
        jax.tree_util.Partial(dist_worker.shifted_apply, fn.args[0], np.zeros(5)) for _ in range(4)
    ]
    assert distributed.plan_grams(same, lat, masks).functions.stacked == ()


def test_equal_options_reuse_the_compiled_block_kernel(x64):
    import chex

    fn, lat, masks = dist_worker.problem(2)
    chex.clear_trace_counter()
    counted = jax.tree_util.Partial(chex.assert_max_traces(fn.func, n=2), *fn.args)
    # n=2: plan_grams traces the generator once for its output shape, the block kernel once when it
    # compiles.
    plan = distributed.plan_grams(
        counted, lat, masks, JacobianOptions(tangent_chunk=2, strategy="materialize")
    )
    plan.block([0])
    equal = dataclasses.replace(
        plan, options=JacobianOptions(tangent_chunk=2, strategy="materialize")
    )
    equal.block([1])  # equal options, another object: the compiled kernel is reused
    # other options: a new compilation
    with pytest.raises(AssertionError, match="traced > 2 times"):
        dataclasses.replace(
            plan, options=JacobianOptions(tangent_chunk=3, strategy="materialize")
        ).block([1])
    chex.clear_trace_counter()


def test_bad_input(x64):
    fn, lat, masks = dist_worker.problem(3)
    with pytest.raises(ValueError, match=r"latents must be \[N, d\]"):
        distributed.sharded_region_grams(fn, np.zeros((0, 5)), masks)
    with pytest.raises(ValueError, match="3 per-sample functions for 2 latents|2 latents"):
        distributed.sharded_region_grams(dist_worker.per_sample_functions(fn, 3), lat[:2], masks)
    with pytest.raises(ValueError, match="strategy"):
        distributed.sharded_region_grams(fn, lat, masks, JacobianOptions(strategy="fast"))
    bad = lat.copy()
    bad[1, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"Samples \[1\]"):
        distributed.sharded_region_grams(fn, bad, masks)
    with pytest.raises(ValueError, match="all of coordinator, num_processes and process_id"):
        distributed.initialize_distributed("localhost:1234")
    with pytest.raises(ValueError, match="host:port"):
        distributed.initialize_distributed("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        distributed.initialize_distributed("localhost:1234", 2, 2)


def test_fingerprint():
    base = {
        "model": "ffhq",
        "psi": 0.7,
        "regions": ["eyes", "nose"],
        "latents": np.arange(6.0).reshape(2, 3),
    }
    same = {
        "regions": ["eyes", "nose"],
        "latents": np.arange(6.0).reshape(2, 3),
        "psi": 0.7,
        "model": "ffhq",
    }
    assert io_utils.fingerprint(base) == io_utils.fingerprint(same)
    for key, value in [
        ("psi", 0.7000001),
        ("regions", ["eyes"]),
        ("latents", np.arange(6.0).reshape(3, 2)),
        ("latents", np.arange(6.0, dtype=np.float32).reshape(2, 3)),
    ]:
        assert io_utils.fingerprint({**base, key: value}) != io_utils.fingerprint(base), key
    with pytest.raises(TypeError, match="model.*no stable fingerprint"):
        io_utils.fingerprint({"model": object()})
    distributed.assert_hosts_agree("anything")  # one process: nothing to disagree with


# --------------------------------------------------------------------------------------------------
# Simulated devices
# --------------------------------------------------------------------------------------------------
def test_eight_simulated_devices_match_one_device(tmp_path, x64):
    got, _ = _worker(tmp_path, "sharded", "--devices", 8)
    assert int(got["num_devices"]) == 8
    for n in (8, 5):  # 5 samples over 8 devices: 3 padding samples that must not count
        A0, B0 = _reference(n)
        _close(got[f"A{n}"], A0, F64_REL)
        _close(got[f"B{n}"], B0, F64_REL)
        A0p, B0p = _reference(n, per_sample=True)
        assert got[f"A{n}_per"].shape == A0p.shape
        _close(got[f"A{n}_per"], A0p, F64_REL)
        _close(got[f"B{n}_per"], B0p, F64_REL)
    fn, _, _ = dist_worker.problem(5)
    A0, B0 = _reference(5, fns=dist_worker.per_sample_functions(fn, 5))
    _close(got["A5_fns"], A0, F64_REL)
    _close(got["B5_fns"], B0, F64_REL)
    msg = str(got["pad_error"])
    assert "5 samples do not divide over 8 devices" in msg and "pad=True" in msg


# --------------------------------------------------------------------------------------------------
# Two processes with jax.distributed on localhost (CPU collectives: gloo)
# --------------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path, x64):
    port, workdir = _free_port(), tmp_path / "run"
    procs = []
    for pid in range(2):
        cmd = [
            sys.executable,
            str(WORKER),
            "multiprocess",
            "--out",
            str(tmp_path / f"p{pid}.npz"),
            "--devices",
            "2",
            "--samples",
            "5",
            "--port",
            str(port),
            "--process-id",
            str(pid),
            "--workdir",
            str(workdir),
        ]
        procs.append(
            subprocess.Popen(
                cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        logs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for pid, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"process {pid} failed:\n{log[-4000:]}"
    outs = [dict(np.load(tmp_path / f"p{pid}.npz")) for pid in range(2)]
    A0, B0 = _reference(5)
    A0p, B0p = _reference(5, per_sample=True)
    for out in outs:
        # 5 samples over 4: padded
        assert int(out["process_count"]) == 2 and int(out["global_devices"]) == 4
        for key, want in [
            ("A", A0),
            ("B", B0),
            ("A_res", A0),
            ("B_res", B0),
            ("A_per", A0p),
            ("B_per", B0p),
        ]:
            _close(out[key], want, F64_REL)
        assert "process(es) [1]" in str(out["disagree_error"])
    # run_resumable: both processes end with the same bits, only process 0 wrote its work directory
    np.testing.assert_array_equal(outs[0]["A_res"], outs[1]["A_res"])
    assert (tmp_path / "run_0").is_dir() and any((tmp_path / "run_0").iterdir())
    assert not (tmp_path / "run_1").exists()


# --------------------------------------------------------------------------------------------------
# Preemption: SIGKILL after a checkpoint, then resume
# --------------------------------------------------------------------------------------------------
def _steps(workdir):
    return sorted(int(p.name) for p in pathlib.Path(workdir).iterdir() if p.name.isdigit())


def test_killed_run_resumes_to_the_same_result(tmp_path, x64):
    fn, lat, masks = dist_worker.problem(7)
    description = resumable.describe_inputs(fn, lat, masks, config={"name": "kill-test"})
    opts = JacobianOptions(tangent_chunk=2)
    every_block = resumable.CheckpointOptions(block_size=2, save_interval_secs=0)
    A_u, B_u = resumable.run_resumable(
        fn,
        lat,
        masks,
        tmp_path / "uninterrupted",
        opts,
        description=description,
        checkpoints=every_block,
    )
    _close(A_u, _reference(7)[0], F64_REL)

    # same device count (1) and block size: the resumed result is bitwise the uninterrupted one
    work = tmp_path / "killed"
    _, proc = _worker(
        tmp_path, "resumable", "--workdir", work, "--block-size", 2, "--kill-after", 4, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert _steps(work)[-1] == 4  # checkpoint of the first 4 samples survived the kill
    computed = []
    A_r, B_r = resumable.run_resumable(
        fn,
        lat,
        masks,
        work,
        opts,
        description=description,
        checkpoints=dataclasses.replace(
            every_block, callback=lambda p: computed.append(p.computed)
        ),
    )
    assert computed[-1] == 3  # only the 3 missing samples were computed
    np.testing.assert_array_equal(np.asarray(A_r), np.asarray(A_u))
    np.testing.assert_array_equal(np.asarray(B_r), np.asarray(B_u))
    assert _steps(work)[-1] == 7

    # killed on 1 device, resumed on 4 simulated devices: the same to round-off
    work = tmp_path / "killed_resharded"
    _, proc = _worker(
        tmp_path, "resumable", "--workdir", work, "--block-size", 2, "--kill-after", 2, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    got, _ = _worker(tmp_path, "resumable", "--workdir", work, "--devices", 4, name="resumed4")
    assert int(got["computed"]) == 5
    _close(got["A"], A_u, F64_REL)
    _close(got["B"], B_u, F64_REL)

    # a finished work directory returns its result without computing anything
    computed.clear()
    A_f, _ = resumable.run_resumable(
        fn,
        lat,
        masks,
        work,
        description=description,
        checkpoints=resumable.CheckpointOptions(callback=computed.append),
    )
    assert computed == []
    _close(A_f, A_u, F64_REL)


def test_sigterm_checkpoints_and_stops_a_single_process(tmp_path, x64):
    fn, lat, masks = dist_worker.problem(6)
    saves = resumable.CheckpointOptions(block_size=2, save_interval_secs=1e9)  # no timed saves
    kw = dict(description=resumable.describe_inputs(fn, lat, masks, config={"name": "sigterm"}))
    opts = JacobianOptions(tangent_chunk=2)
    A_u, B_u = resumable.run_resumable(
        fn, lat, masks, tmp_path / "clean", opts, checkpoints=saves, **kw
    )
    work = tmp_path / "stopped"
    sent = []

    def terminate_once(progress):
        if not sent:
            # a preemption notice after the first block
            sent.append(os.kill(os.getpid(), signal.SIGTERM))

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(resumable.Preempted, match="after 4 of 6 samples"):
        resumable.run_resumable(
            fn,
            lat,
            masks,
            work,
            opts,
            checkpoints=dataclasses.replace(saves, callback=terminate_once),
            **kw,
        )
    # the handler is only installed while running
    assert signal.getsignal(signal.SIGTERM) == previous
    assert _steps(work) == [4]  # saved at the notice, although no timed save was due
    A_r, B_r = resumable.run_resumable(fn, lat, masks, work, opts, checkpoints=saves, **kw)
    # same devices and blocks: bitwise
    np.testing.assert_array_equal(np.asarray(A_r), np.asarray(A_u))
    np.testing.assert_array_equal(np.asarray(B_r), np.asarray(B_u))


def test_workdir_of_another_experiment_is_refused(tmp_path, x64):
    fn, lat, masks = dist_worker.problem(3)
    work = tmp_path / "exp"

    def run(fn, lat, config, **kw):
        description = resumable.describe_inputs(fn, lat, masks, config=config)
        return resumable.run_resumable(fn, lat, masks, work, description=description, **kw)

    run(
        fn,
        lat,
        {"regions": "eyes", "psi": 0.7},
        checkpoints=resumable.CheckpointOptions(save_interval_secs=0),
    )
    with pytest.raises(
        io_utils.WorkdirConflict,
        match=r"different settings.*description\.config\.psi: '0\.7' -> '0\.5'",
    ):
        run(fn, lat, {"regions": "eyes", "psi": 0.5})
    with pytest.raises(
        io_utils.WorkdirConflict,
        match=r"different settings.*description\.latents: "
        r"float64\[3, 5\]",
    ):
        run(fn, lat + 1, {"regions": "eyes", "psi": 0.7})
    fn_other, _, _ = dist_worker.problem(3, seed=5)
    with pytest.raises(
        io_utils.WorkdirConflict, match=r"different settings.*description\.generator: sha256"
    ):
        run(fn_other, lat, {"regions": "eyes", "psi": 0.7})


def test_accumulator_bookkeeping(tmp_path):
    acc = resumable.ResumableGramAccumulator(
        tmp_path / "acc",
        "fp",
        num_samples=4,
        gram_shape=(2, 3, 3),
        per_sample=True,
        checkpoints=resumable.CheckpointOptions(save_interval_secs=0),
    )
    g = np.arange(18.0, dtype=np.float32).reshape(2, 3, 3)
    acc.add([0, 2], 2 * g, np.stack([g, g]))
    with pytest.raises(ValueError, match="already finished"):
        acc.add([2], g, g[None])
    with pytest.raises(ValueError, match="per_sample of shape"):
        acc.add([1], g)
    with pytest.raises(RuntimeError, match="Only 2 of 4"):
        acc.mean()
    assert acc.maybe_save() and acc.pending().tolist() == [1, 3]
    acc.close()
    again = resumable.ResumableGramAccumulator(
        tmp_path / "acc", "fp", num_samples=4, gram_shape=(2, 3, 3), per_sample=True
    )
    assert again.restored_step == 2 and again.pending().tolist() == [1, 3]
    again.add([1, 3], 2 * g, np.stack([g, g]))
    np.testing.assert_array_equal(again.mean(), g)  # exact: small integers in float64
    np.testing.assert_array_equal(again.per_sample_grams()[3], g)
    again.close()
    with pytest.raises(io_utils.WorkdirConflict, match=r"different settings.*num_samples: 4 -> 5"):
        resumable.ResumableGramAccumulator(
            tmp_path / "acc", "fp", num_samples=5, gram_shape=(2, 3, 3), per_sample=True
        )


# --------------------------------------------------------------------------------------------------
# The pod command through the launcher: N processes on one shared work directory (localhost, gloo)
# --------------------------------------------------------------------------------------------------
POD_FLAGS = {"num_samples": 12, "block_size": 2, "save_interval_secs": 0, "aggregation": "mean"}
PREEMPTED_EXIT = 143  # experiments.find_directions.PREEMPTED_EXIT (128 + SIGTERM)


def _launch(
    tmp_path, workdir, num_processes, fault=None, fault_process=None, fault_block=2, extra=()
):
    """Runs ``python -m experiments.find_directions ... --distributed`` as ``num_processes``
    processes (via ``dist_worker.py launch``, which can inject a signal at a block). When one
    process dies of SIGKILL, the others are killed too, as a pod scheduler restarting the job would.
    Returns (return codes, logs, pids)."""
    port = _free_port()
    flags = [f"--config.{k}={v}" for k, v in POD_FLAGS.items()] + list(extra)
    env = dict(_env(), REGFAC_FIXTURES=str(FIXTURES))
    procs, attempt = [], len(list(tmp_path.glob("launch_*.log")))
    for pid in range(num_processes):
        fault_args = (
            ["--fault", fault, "--fault-block", str(fault_block)] if pid == fault_process else []
        )
        cmd = [
            sys.executable,
            str(WORKER),
            "launch",
            *fault_args,
            "--",
            "--config",
            f"{REPO}/experiments/configs/ffhq_stylegan2.py:tiny",
            "--workdir",
            str(workdir),
            "--distributed",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num_processes",
            str(num_processes),
            "--process_id",
            str(pid),
            *flags,
        ]
        log = open(tmp_path / f"launch_{attempt:03d}_{workdir.name}_{pid}.log", "w+")
        procs.append(
            (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), log)
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while any(p.poll() is None for p, _ in procs) and time.monotonic() < deadline:
            if any(p.returncode == -signal.SIGKILL for p, _ in procs):
                for p, _ in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    logs = []
    for _, log in procs:
        log.seek(0)
        logs.append(log.read())
        log.close()
    return [p.returncode for p, _ in procs], logs, [p.pid for p, _ in procs]


@pytest.fixture(scope="module")
def pod_reference():
    """``(A, B)`` of the pod config by the plain per-sample loop of ``jacobian.region_grams`` in
    this process."""
    from experiments import pipeline
    from experiments.configs import ffhq_stylegan2

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(pipeline.FIXTURES_ENV, str(FIXTURES))
        cfg = ffhq_stylegan2.get_config("tiny")
        for key, value in POD_FLAGS.items():
            cfg[key] = value
        job = pipeline.prepare(cfg)
    per = [
        jacobian.region_grams(f, p, job.masks, JacobianOptions(tangent_chunk=16))
        for f, p in zip(job.fns, job.points, strict=True)
    ]
    return tuple(np.mean([np.asarray(g[k]) for g in per], axis=0) for k in (0, 1))


# The bar for pod results against the single-process loop. float32 Grams summed in another
# order (per device, psum, float64 host sums, padding) differ by a few float32 ulps (~1e-7
# relative); 1e-5 leaves margin.
POD_REL = 1e-5


def _assert_pod_result(workdir, reference):
    grams = np.load(workdir / "grams.npz")
    for name, want in zip("AB", reference, strict=True):
        rel = np.abs(grams[name] - want).max() / np.abs(want).max()
        assert rel <= POD_REL, (name, rel)
    assert (workdir / "directions" / "eyes.npy").exists() and (
        workdir / "directions_orbax"
    ).is_dir()


def _lock_holder(workdir):
    return json.loads((workdir / "run.lock").read_text())["pid"]


def test_pod_preempted_on_4_processes_resumes_on_2(tmp_path, pod_reference):
    """SIGTERM on host 2 of 4 stops every host after a checkpoint; the same command on 2 hosts
    finishes the job."""
    work = tmp_path / "pod"
    rcs, logs, pids = _launch(tmp_path, work, 4, fault="sigterm", fault_process=2)
    assert rcs == [PREEMPTED_EXIT] * 4, "\n".join(log[-3000:] for log in logs)
    assert all("Preempted (SIGTERM)" in log and "Traceback" not in log for log in logs)
    done = _steps(work / "grams_ckpt")
    assert done and 0 < done[-1] < POD_FLAGS["num_samples"] and not (work / "grams.npz").exists()
    assert _lock_holder(work) == pids[0]  # process 0 held the lock
    rcs, logs, pids = _launch(tmp_path, work, 2)  # pod-style restart on another process count
    assert rcs == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert f"resuming: {done[-1]} of {POD_FLAGS['num_samples']} samples done" in logs[0]
    assert _lock_holder(work) == pids[0]
    _assert_pod_result(work, pod_reference)


@pytest.mark.slow
def test_pod_2_and_4_processes_equal_the_loop(tmp_path, pod_reference):
    for n in (2, 4):
        work = tmp_path / f"pod{n}"
        rcs, logs, pids = _launch(tmp_path, work, n)
        assert rcs == [0] * n, "\n".join(log[-3000:] for log in logs)
        assert _lock_holder(work) == pids[0]
        _assert_pod_result(work, pod_reference)
    # another experiment on that work directory: process 0 refuses it, and every process stops (none
    # hangs)
    rcs, logs, _ = _launch(tmp_path, tmp_path / "pod2", 2, extra=["--config.seed=5"])
    assert rcs[0] != 0 and rcs[1] != 0
    assert (
        "config.seed: 4 -> 5" in logs[0]
        and "Process 0 failed to claim the work directory" in logs[1]
    )


@pytest.mark.slow
def test_pod_process_killed_then_same_command_resumes(tmp_path, pod_reference):
    work = tmp_path / "pod"
    rcs, logs, _ = _launch(tmp_path, work, 2, fault="sigkill", fault_process=1, fault_block=3)
    assert rcs[1] == -signal.SIGKILL and not (work / "grams.npz").exists()
    done = _steps(work / "grams_ckpt")
    assert done and done[-1] < POD_FLAGS["num_samples"]
    rcs, logs, _ = _launch(tmp_path, work, 2)  # the same command on every host
    assert rcs == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert f"resuming: {done[-1]} of" in logs[0]
    _assert_pod_result(work, pod_reference)


def test_auto_uses_the_xla_memory_planner_beyond_small_images():
    """The launcher's path (distributed.plan_grams) chooses like region_grams: by XLA's analysis of
    the kernel."""
    from regfac_jax.models import toy

    fn = toy.toy_latent_fn(
        toy.init_toy(jax.random.key(0), latent_dim=8, resolution=256, channels=4)
    )
    lat = np.asarray(jax.random.normal(jax.random.key(1), (2, 8)), np.float32)
    masks = np.zeros((256, 256), np.float32)
    masks[64:128, 64:192] = 1.0
    # 64 MiB: the 256x256x3 Jacobian (2 x 8 x 196608 x 4 bytes = 12.6 MB) is not "small" here
    budget = 64 << 20
    plan = distributed.plan_grams(fn, lat, masks, JacobianOptions(memory_budget=budget))
    want = jacobian.plan_grams(
        fn,
        jnp.asarray(lat[0]),
        jacobian.mask_weights(masks[None], 3),
        JacobianOptions(memory_budget=budget),
    )
    got = plan.options
    assert (got.strategy, got.tangent_chunk, got.block) == (
        want.strategy,
        want.tangent_chunk,
        want.block,
    )
    assert want.peak_bytes <= budget
    total = plan.block(np.arange(2)).total
    a, b = jacobian.region_grams(fn, lat, masks, JacobianOptions(strategy="materialize"))
    # float32 Grams of ~5e4 rows summed in another order: ~1e-6 relative; 1e-4 is far below any
    # wrong row weight.
    _close(np.asarray(total)[:1] / 2, a, 1e-4)
    _close(np.asarray(total)[1:] / 2, b, 1e-4)
