"""Latency of the interactive editor on the shipped model: ``python -m benchmarks.bench_app
[--server]``.

Measures, after warm-up (compilation), as medians over repeats (``benchmarks.timing``):

* region -> directions: what the Compute button runs server-side for a fresh region (the Jacobian
  Grams of N samples, the ReSeFa solve, the spectrum, the in-region shares and the redrawn image),
  with N = 16;
* slider -> edited image: what a slider move runs server-side (the edit, the render, the enlarged
  picture with its outline) plus the PNG encoding gradio does before sending it;
* with ``--server``: the same slider move as a round trip through gradio_client to an in-process
  server.

The machine's load average is printed before and after: on shared cores the wall times grow with the
load, so the process CPU time of the region step is printed too.
"""

from __future__ import annotations

import os

# as the launcher sets it (experiments/app/__main__.py)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.timing import median_seconds  # noqa: E402
from experiments.app import core  # noqa: E402
from experiments.configs import demo_faces  # noqa: E402

MOUTH_BOX = (22, 10, 28, 22)


def region_to_directions(model, num: int, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds of Compute on a fresh region."""
    sessions = [core.new_session(model, s) for s in range(repeats + 1)]
    cpu = []

    def step():
        session = sessions.pop()
        core.set_box(session, *MOUTH_BOX)
        start = time.process_time()
        core.compute(session, "resefa", num, 5)
        out = core.render_view(session)
        cpu.append(time.process_time() - start)
        return out

    wall = median_seconds(step, repeats)
    return wall, statistics.median(cpu[1:])


def slider_to_image(session, repeats: int) -> tuple[float, float]:
    """Median seconds of a slider move: the edited, enlarged picture; and its PNG encoding."""
    rng = np.random.default_rng(0)
    r = core.slider_range(session.model)

    def view():
        return core.render_view(session, rng.uniform(-r, r, size=core.K_MAX))

    picture = view()

    def encode():
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, format="PNG")
        return buf.getvalue()

    return median_seconds(view, repeats), median_seconds(encode, repeats)


def round_trip(model, repeats: int) -> float:
    """Median seconds of a slider move through gradio_client to a server in this process."""
    import socket

    from gradio_client import Client

    from experiments.app import ui

    page = ui.build(ui.EditorApp(model.cfg, model))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = ui.launch(page, port=port, block=False)
    try:
        client = Client(url, verbose=False)
        client.predict(", ".join(map(str, MOUTH_BOX)), api_name="/set_box")
        client.predict("resefa", 16, 5, api_name="/compute")
        values = iter(np.linspace(-3, 3, repeats + 1))
        return median_seconds(
            lambda: client.predict(
                True, float(next(values)), *[0.0] * (core.K_MAX - 1), api_name="/edit"
            ),
            repeats,
        )
    finally:
        page.close()


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--server", action="store_true", help="also time a slider move through gradio_client"
    )
    return parser


def main():
    args = _parser().parse_args()
    print("before:", core.environment_note())
    model = core.load_model(demo_faces.get_config())
    t0 = time.perf_counter()
    core.warm_up(model)
    print(f"warm-up (compilation) {time.perf_counter() - t0:.1f} s")
    wall, cpu = region_to_directions(model, args.num_samples, args.repeats)
    print(
        f"region -> directions (ReSeFa, N = {args.num_samples}): {wall:.2f} s wall (median of "
        f"{args.repeats}), {cpu:.2f} s process CPU"
    )
    session = core.compute(
        core.set_box(core.new_session(model, 0), *MOUTH_BOX), "resefa", args.num_samples, 5
    )
    view, png = slider_to_image(session, 10 * args.repeats)
    print(
        f"slider -> edited image: {1e3 * view:.1f} ms (+ PNG encoding {1e3 * png:.1f} ms) = "
        f"{1e3 * (view + png):.1f} ms server-side (median of {10 * args.repeats})"
    )
    if args.server:
        print(
            f"slider -> image through gradio_client (HTTP, queue, PNG transfer): "
            f"{1e3 * round_trip(model, 4 * args.repeats):.0f} ms (median of {4 * args.repeats})"
        )
    print("after:", core.environment_note())


if __name__ == "__main__":
    main()
