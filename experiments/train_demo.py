r"""Trains the shipped demo generator: a small StyleGAN2 on procedural cartoon faces (32x32), on a CPU.

The shipped ``regfac_jax/data/demo_faces`` came from (on 2 CPU cores shared with other jobs, in two sittings of
45 and ~35 minutes; its config.json records the exact step count, images seen and training minutes):

  python -m experiments.train_demo --workdir /tmp/regfac_demo_train --max_minutes 45 \
      --export regfac_jax/data/demo_faces --docs docs/demo
  (then the same command again, which resumed; --steps N stops at step N instead of by time)

Re-running the same command resumes from the newest checkpoint in ``--workdir`` (written every
``--ckpt_every`` steps and at exit). ``--tiny`` shrinks everything to a seconds-long smoke run.
"""
from __future__ import annotations

import concurrent.futures
import os
import time

# Small host-side matrices only: multi-threaded OpenBLAS just spins on shared cores (see experiments/demo.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import flags  # noqa: E402

from experiments import cli  # noqa: E402

flags.DEFINE_string("workdir", "/tmp/regfac_demo_train", "Checkpoints and logs (resumed from when present).")
flags.DEFINE_integer("steps", 20000, "Total training iterations (one D and one G step each).")
flags.DEFINE_float("max_minutes", 45.0, "Stop (and checkpoint) after this much wall time in this invocation.")
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_integer("seed", 0, "Seed for initialisation, noise and the data stream.")
flags.DEFINE_integer("ckpt_every", 250, "Checkpoint interval in steps.")
flags.DEFINE_string("export", None, "Write the EMA generator here (generator.npz, config.json, SHA256SUMS).")
flags.DEFINE_string("docs", None, "Write a sample grid, a real grid and the distribution check here.")
flags.DEFINE_bool("tiny", False, "Smoke run: 16x16 images and tiny channels (seconds per step).")

FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from regfac_jax import demo
    from regfac_jax.demo import faces, training

    g_config = demo.demo_generator_config(tiny=FLAGS.tiny)
    res = g_config["img_resolution"]
    cfg = training.TrainConfig(batch_size=FLAGS.batch, d_channel_base=g_config["synthesis_kwargs"]["channel_base"],
                               d_channel_max=g_config["synthesis_kwargs"]["channel_max"])
    state, meta = demo.restore_training(FLAGS.workdir, g_config, cfg, FLAGS.seed)
    gen = training.ema_generator(state, g_config)
    start = int(state.step)
    stream = faces.batches(FLAGS.seed, FLAGS.batch, res, start=start)
    deadline = time.time() + 60 * FLAGS.max_minutes
    t0, seconds = time.time(), meta.get("train_seconds", 0.0)
    metrics = {}
    with concurrent.futures.ThreadPoolExecutor(1) as pool, tqdm(total=FLAGS.steps, initial=start, unit="step",
                                                                  desc="train demo GAN") as bar:
        pending = pool.submit(next, stream)
        for step in range(start, FLAGS.steps):
            reals = jnp.asarray(pending.result())
            pending = pool.submit(next, stream)
            key = jax.random.fold_in(jax.random.key(FLAGS.seed), step)
            with_r1 = step % cfg.r1_interval == 0
            state, metrics = training.train_step(state, reals, key, gen, cfg, with_r1)
            bar.update(1)
            if step % 25 == 0:
                bar.set_postfix({k: f"{float(v):.3f}" for k, v in metrics.items()})
            done = step + 1 == FLAGS.steps or time.time() > deadline
            if (step + 1) % FLAGS.ckpt_every == 0 or done:
                meta = {"train_seconds": seconds + time.time() - t0, "batch": FLAGS.batch, "seed": FLAGS.seed,
                        "last_metrics": {k: float(v) for k, v in metrics.items()}}
                demo.save_training(FLAGS.workdir, state, meta)
            if done:
                break
    print(f"stopped at step {int(state.step)} ({int(state.step) * FLAGS.batch} images, "
          f"{meta['train_seconds'] / 60:.1f} min of training in total)")
    if FLAGS.export:
        info = {"steps": int(state.step), "images_seen": int(state.step) * FLAGS.batch, "batch": FLAGS.batch,
                "train_minutes": round(meta["train_seconds"] / 60, 1), "seed": FLAGS.seed,
                "train_config": {k: v for k, v in vars(cfg).items()},
                "command": ("python -m experiments.train_demo --workdir /tmp/regfac_demo_train --max_minutes 600 "
                            f"--steps {int(state.step)} --batch {FLAGS.batch} --seed {FLAGS.seed} "
                            f"--export {FLAGS.export}"),
                "note": "resumable: rerunning the command continues from the newest checkpoint in --workdir"}
        demo.export_generator(training.ema_generator(state, g_config), FLAGS.export, info)
        print(f"exported the EMA generator to {FLAGS.export}")
    if FLAGS.docs:
        report = demo.write_sample_docs(training.ema_generator(state, g_config), FLAGS.docs)
        print(report)


if __name__ == "__main__":
    cli.run(main)
