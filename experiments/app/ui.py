"""The browser interface (gradio): widgets wired to :mod:`experiments.app.core`, nothing more.

Every handler takes the session from a ``gr.State``, calls one core function and returns the widgets
to update; a :class:`core.AppError` (or a region error from the library) becomes a message in the
status line and leaves the rest of the page as it was, so bad input never takes the server down.
Each event has an ``api_name`` so that ``gradio_client`` drives the same code the page does
(tests/test_app.py).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import traceback

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the editor never phones home

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from experiments.app import core  # noqa: E402

log = logging.getLogger("regfac_jax.app")

INTRO = (
    "**Region-based directions (ReSeFa).** Pick a sample by seed (or upload a photo), mark a "
    "region: click two "
    "corners of a box on the image, choose a preset, or paint with the brush. Then compute "
    "the directions and move the sliders: the edited image updates live, with the region outlined."
)
NO_INVERSION = "Inversion is not available in this build (regfac_jax.inversion is missing): pick samples by seed."


class EditorApp:
    """Server-wide state: the configuration, the default model (or why it failed to load) and loaded
    models."""

    def __init__(self, cfg, model: core.Model | None = None, load_error: str | None = None):
        self.cfg = cfg
        self.models: dict[str, core.Model] = {}
        self.lock = threading.Lock()
        if model is not None:
            self.models[str(cfg.model)] = model
        self.default_spec = str(cfg.model)
        self.load_error = load_error

    @classmethod
    def from_config(cls, cfg) -> "EditorApp":
        """Loads ``cfg.model``; a failure is kept as a message for the page instead of stopping the
        server."""
        try:
            return cls(cfg, core.load_model(cfg))
        except core.AppError as err:
            log.error("%s", err)
            return cls(cfg, None, str(err))

    def model(self, spec: str | None = None) -> core.Model:
        spec = self.default_spec if not spec else str(spec).strip()
        with self.lock:
            if spec not in self.models:
                if spec == self.default_spec and self.load_error:
                    raise core.AppError(self.load_error)
                self.models[spec] = core.load_model(core.with_model(self.cfg, spec))
            return self.models[spec]

    def session(self, state: core.Session | None) -> core.Session:
        return state if state is not None else core.new_session(self.model(), 0)


def _error_text(err: Exception) -> str:
    return f"**Error:** {err}"


def guarded(status_component):
    """Turns AppError / ValueError from a handler into a status message; other errors are logged and
    reported."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (core.AppError, ValueError) as err:
                return {status_component: _error_text(err)}
            except Exception as err:  # noqa: BLE001 -- the server must stay up whatever a handler meets
                log.error("handler %s failed:\n%s", fn.__name__, traceback.format_exc())
                return {
                    status_component: _error_text(
                        f"internal error ({type(err).__name__}: {err}); see the server log."
                    )
                }

        return inner

    return wrap


def build(app: EditorApp) -> gr.Blocks:
    """The editor page."""
    with gr.Blocks(title="regfac-jax: region-based editor", analytics_enabled=False) as page:
        state = gr.State(None)
        gr.Markdown("# Region-based semantic factorization: interactive editor\n" + INTRO)
        status = gr.Markdown(app.load_error and _error_text(app.load_error) or "", elem_id="status")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                w = _controls(app)
            with gr.Column(scale=1, min_width=300):
                view = _view_column()
            with gr.Column(scale=1, min_width=300):
                export = _export_column()
        _wire(app, page, dict(w, state=state, status=status, **view, **export))
    return page


def _view_column() -> dict:
    """The middle column, top to bottom: the edited image, the outline switch, sliders, reset."""
    view = gr.Image(
        label="Edited image (click two corners to draw a box)",
        type="numpy",
        interactive=False,
        elem_id="view",
        image_mode="RGB",
        format="png",
        buttons=["download"],
        height=300,
    )
    outline = gr.Checkbox(True, label="Show the region outline", elem_id="outline")
    sliders = [
        gr.Slider(-3, 3, 0, step=0.05, label=f"#{i + 1}", visible=False, elem_id=f"slider{i}")
        for i in range(core.K_MAX)
    ]
    reset = gr.Button("Reset the sliders", size="sm")
    return dict(view=view, outline=outline, sliders=sliders, reset=reset)


def _export_column() -> dict:
    """The right column, top to bottom: the spectrum plot and the two exports."""
    spectrum = gr.BarPlot(
        None,
        x="direction",
        y="log10 value",
        elem_id="spectrum",
        height=260,
        label="Spectrum: log10 of n^T A n / n^T B n (ReSeFa: its eigenvalues)",
    )
    npy_button = gr.Button("Export the directions (.npy, [k, d])")
    npy_file = gr.File(label="Directions", interactive=False, elem_id="npy_file")
    gif_button = gr.Button("Export a GIF of the edit")
    gif_file = gr.File(label="GIF", interactive=False, elem_id="gif_file")
    return dict(
        spectrum=spectrum,
        npy_button=npy_button,
        npy_file=npy_file,
        gif_button=gif_button,
        gif_file=gif_file,
    )


def _controls(app: EditorApp) -> dict:
    """The left column, top to bottom: model, subject (seed or upload), region, method.

    Returns:
      The widgets by name.
    """
    model = app.models.get(app.default_spec)
    widgets = _model_controls(app, model)
    widgets.update(_subject_controls())
    widgets.update(_region_controls(core.preset_names(model) if model else []))
    widgets.update(_method_controls())
    return widgets


def _model_controls(app: EditorApp, model: core.Model | None) -> dict:
    with gr.Accordion("Model", open=app.load_error is not None):
        model_info = gr.Markdown(
            model.describe() if model else "no model loaded", elem_id="model_info"
        )
        spec = gr.Textbox(
            app.default_spec,
            label="Model: 'demo', 'fixture:<name>', a checkpoint or a directory",
            elem_id="model_spec",
        )
        load = gr.Button("Load the model", size="sm")
    return dict(model_info=model_info, spec=spec, load=load)


def _subject_controls() -> dict:
    with gr.Row():
        seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="seed")
        show = gr.Button("Show the sample", elem_id="show")
    with gr.Accordion("Upload a real image", open=False):
        note = "" if core.inversion_available() else NO_INVERSION
        gr.Markdown(note, elem_id="inversion_note")
        upload_file = gr.File(
            label="Image", file_types=["image"], type="filepath", elem_id="upload"
        )
        steps = gr.Number(200, label="Inversion steps", precision=0, minimum=1)
        invert = gr.Button("Invert and edit it")
    return dict(seed=seed, show=show, upload_file=upload_file, steps=steps, invert=invert)


def _region_controls(presets: list[str]) -> dict:
    with gr.Tabs():
        with gr.Tab("Box"):
            box = gr.Textbox(
                "", label="Box: row0, col0, row1, col1 (model pixels, end excluded)", elem_id="box"
            )
            preset = gr.Dropdown(presets, value=None, label="Or a preset region", elem_id="preset")
        with gr.Tab("Brush"):
            editor = gr.ImageEditor(
                type="numpy",
                image_mode="RGBA",
                sources=(),
                transforms=(),
                layers=False,
                brush=gr.Brush(colors=["#ff3030"], color_mode="fixed", default_size=12),
                canvas_size=(core.DISPLAY_SIZE, core.DISPLAY_SIZE),
                label="Paint the region",
                elem_id="brush",
            )
            use_brush = gr.Button("Use the painted region")
    return dict(box=box, preset=preset, editor=editor, use_brush=use_brush)


def _method_controls() -> dict:
    method = gr.Dropdown(
        [(label, key) for key, label in core.METHOD_LABELS.items()],
        value="resefa",
        label="Method",
        elem_id="method",
    )
    num = gr.Slider(
        1,
        64,
        16,
        step=1,
        label="Samples N (the image shown and N - 1 more from the seed)",
        elem_id="num_samples",
    )
    k = gr.Slider(1, core.K_MAX, 5, step=1, label="Directions shown (top k)", elem_id="k")
    compute = gr.Button("Compute the directions", variant="primary", elem_id="compute")
    return dict(method=method, num=num, k=k, compute=compute)


def _subject_outputs(p: dict, session: core.Session, message: str) -> dict:
    """Everything that changes when the subject (or model) changes: image, brush background, cleared
    results."""
    view = core.render_view(session)
    out = {
        p["state"]: session,
        p["status"]: message,
        p["view"]: view,
        p["spectrum"]: None,
        p["editor"]: {
            "background": core.display(session, session.base, outline=False),
            "layers": [],
            "composite": None,
        },
    }
    # directions carry over to a new subject
    kept = 0 if session.dirs is None else session.dirs.shape[0]
    out.update({s: gr.update(visible=i < kept, value=0) for i, s in enumerate(p["sliders"])})
    if kept:
        out[p["spectrum"]] = _spectrum(session)
    return out


def _region_outputs(p: dict, session: core.Session) -> dict:
    out = {
        p["state"]: session,
        p["view"]: core.render_view(session),
        p["spectrum"]: None,
        p["status"]: f"Region: {session.region}. Now compute the directions.",
    }
    out.update({s: gr.update(visible=False, value=0) for s in p["sliders"]})
    return out


def _subject_targets(p: dict) -> list:
    """The widgets :func:`_subject_outputs` updates."""
    return [p["state"], p["status"], p["view"], p["spectrum"], p["editor"], *p["sliders"]]


def _region_targets(p: dict) -> list:
    """The widgets :func:`_region_outputs` updates."""
    return [p["state"], p["status"], p["view"], p["spectrum"], *p["sliders"]]


def _wire(app: EditorApp, page: gr.Blocks, p: dict) -> None:
    """Connects every interaction's handlers to the page, in this order (gradio numbers the events
    so)."""
    _wire_subject(app, page, p)
    _wire_upload(app, p)
    _wire_click(app, p)
    _wire_region(app, p)
    _wire_compute(app, p)
    _wire_sliders(app, p)
    _wire_export(app, p)


def _wire_subject(app: EditorApp, page: gr.Blocks, p: dict) -> None:
    """The page's first subject, a sample by seed, and loading another model."""

    @guarded(p["status"])
    def on_start(state):
        session = app.session(state)
        return _subject_outputs(p, session, f"Showing {session.source}. {app.load_error or ''}")

    @guarded(p["status"])
    def on_seed(state, seed):
        session = core.select_seed(app.session(state), seed)
        return _subject_outputs(
            p, session, f"Showing {session.source}; draw a region{_kept(session)}."
        )

    @guarded(p["status"])
    def on_load(spec):
        model = app.model(spec)
        session = core.new_session(model, 0)
        out = _subject_outputs(p, session, f"Loaded {model.describe()}.")
        out[p["model_info"]] = model.describe()
        out[p["preset"]] = gr.update(choices=core.preset_names(model), value=None)
        return out

    subject_out = _subject_targets(p)
    page.load(on_start, [p["state"]], subject_out, api_visibility="private")
    p["show"].click(on_seed, [p["state"], p["seed"]], subject_out, api_name="show_sample")
    p["seed"].submit(on_seed, [p["state"], p["seed"]], subject_out, api_visibility="private")
    p["load"].click(
        on_load, [p["spec"]], subject_out + [p["model_info"], p["preset"]], api_name="load_model"
    )


def _wire_upload(app: EditorApp, p: dict) -> None:
    """Inverting an uploaded photo and making it the subject."""

    # gradio finds its progress tracker by the type of this default (its documented idiom): a call.
    @guarded(p["status"])
    def on_upload(state, path, steps, progress=gr.Progress()):  # noqa: B008
        if not path:
            raise core.AppError("Choose an image file to upload first.")
        session = core.upload(app.session(state), path, steps, lambda f, d: progress(f, desc=d))
        return _subject_outputs(
            p, session, f"Showing the inverted {session.source}; draw a region{_kept(session)}."
        )

    p["invert"].click(
        on_upload,
        [p["state"], p["upload_file"], p["steps"]],
        _subject_targets(p),
        api_name="upload",
    )


def _wire_click(app: EditorApp, p: dict) -> None:
    """A box drawn by two clicks on the image."""

    @guarded(p["status"])
    def on_click(state, evt: gr.SelectData):
        session = core.click(app.session(state), evt.index[0], evt.index[1])
        if session.corner is not None:
            return {
                p["state"]: session,
                p["status"]: f"First corner at row {session.corner[0]}, "
                f"column {session.corner[1]}; click the opposite "
                "corner.",
            }
        out = _region_outputs(p, session)
        out[p["box"]] = ", ".join(str(v) for v in _box_of(session))
        return out

    p["view"].select(
        on_click, [p["state"]], _region_targets(p) + [p["box"]], api_visibility="private"
    )


def _wire_region(app: EditorApp, p: dict) -> None:
    """A region typed as a box, picked as a preset, or painted with the brush."""

    @guarded(p["status"])
    def on_box(state, text):
        return _region_outputs(p, core.set_box(app.session(state), *core.parse_box(text)))

    @guarded(p["status"])
    def on_preset(state, name):
        if not name:
            return {}
        return _region_outputs(p, core.set_preset(app.session(state), name))

    @guarded(p["status"])
    def on_brush(state, value):
        layers = (value or {}).get("layers") or []
        return _region_outputs(p, core.set_brush(app.session(state), layers))

    region_out = _region_targets(p)
    p["box"].submit(on_box, [p["state"], p["box"]], region_out, api_name="set_box")
    p["preset"].input(on_preset, [p["state"], p["preset"]], region_out, api_name="set_preset")
    p["use_brush"].click(on_brush, [p["state"], p["editor"]], region_out, api_name="set_brush")


def _compute_outputs(p: dict, session: core.Session, method: str, num) -> dict:
    """The page after computing: the view, the spectrum and one labelled slider per direction."""
    r = core.slider_range(session.model)
    labels = core.slider_labels(session)
    out = {
        p["state"]: session,
        p["view"]: core.render_view(session),
        p["spectrum"]: _spectrum(session),
        p["status"]: f"{core.METHOD_LABELS[method]}: {len(labels)} directions for the "
        f"{session.region} from "
        f"{int(num)} samples. Move the sliders.",
    }
    for i, s in enumerate(p["sliders"]):
        out[s] = gr.update(
            visible=i < len(labels),
            label=labels[i] if i < len(labels) else f"#{i + 1}",
            minimum=-r,
            maximum=r,
            step=r / 60,
            value=0,
        )
    return out


def _wire_compute(app: EditorApp, p: dict) -> None:
    """Computing the directions of the marked region."""

    # gradio finds its progress tracker by the type of this default (its documented idiom): a call.
    @guarded(p["status"])
    def on_compute(state, method, num, k, progress=gr.Progress()):  # noqa: B008
        session = core.compute(app.session(state), method, num, k, lambda f, d: progress(f, desc=d))
        return _compute_outputs(p, session, method, num)

    inputs = [p["state"], p["method"], p["num"], p["k"]]
    p["compute"].click(on_compute, inputs, _region_targets(p), api_name="compute")


def _wire_sliders(app: EditorApp, p: dict) -> None:
    """Live edits as the sliders (or the outline checkbox) move, and resetting them."""
    status, sliders = p["status"], p["sliders"]

    @guarded(status)
    def on_edit(state, outline, *alphas):
        return {p["view"]: core.render_view(app.session(state), alphas, bool(outline))}

    @guarded(status)
    def on_reset(state, outline):
        out = {p["view"]: core.render_view(app.session(state), (), bool(outline))}
        out.update({s: 0 for s in sliders})
        return out

    gr.on(
        [s.input for s in sliders] + [p["outline"].input],
        on_edit,
        [p["state"], p["outline"], *sliders],
        [p["view"], status],
        api_name="edit",
        trigger_mode="always_last",
        show_progress="hidden",
    )
    p["reset"].click(
        on_reset, [p["state"], p["outline"]], [p["view"], status, *sliders], api_name="reset"
    )


def _wire_export(app: EditorApp, p: dict) -> None:
    """Downloads: the directions as .npy and the current edit as a GIF."""
    status = p["status"]

    @guarded(status)
    def on_npy(state):
        path = core.export_npy(app.session(state))
        return {p["npy_file"]: str(path), status: f"Wrote {path.name} (rows [k, d], unit norm)."}

    @guarded(status)
    def on_gif(state, *alphas):
        path = core.export_gif(app.session(state), alphas)
        return {p["gif_file"]: str(path), status: f"Wrote {path.name}."}

    p["npy_button"].click(on_npy, [p["state"]], [p["npy_file"], status], api_name="export_npy")
    p["gif_button"].click(
        on_gif, [p["state"], *p["sliders"]], [p["gif_file"], status], api_name="export_gif"
    )


def _kept(session: core.Session) -> str:
    if session.dirs is None:
        return ""
    return f", or move the sliders: the {core.METHOD_LABELS[session.method]} directions found so far apply here too"


def _box_of(session: core.Session) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(session.mask > 0.5)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def _spectrum(session: core.Session):
    import pandas as pd

    return pd.DataFrame(core.spectrum_rows(session))


def launch(page: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serves the page (no share link, no analytics, no server-side rendering)."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        # local fonts: nothing fetched from the web
        font_mono=["ui-monospace", "monospace"],
    )
    return page.queue(default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=not block,
        quiet=not block,
        max_file_size=core.MAX_UPLOAD_BYTES,
        ssr_mode=False,
        theme=theme,
        footer_links=["api"],
    )
