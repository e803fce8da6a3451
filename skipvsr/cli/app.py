"""``skipvsr app``: a local web page to try routing on your own clip or the demo clip.

Gradio draws the page (``pip install 'skipvsr[app]'``) and is imported only by :func:`run`, so
the plain install works without it. A job (:func:`run_job`) is the ``upscale`` command with both
routing-map views written beside the output, and, for the demo clip, the demo's PSNR against
the real picture. Uploads are checked at the door (:func:`check_upload`) and capped: the page
is for short, small clips on a CPU, ``skipvsr upscale`` for everything else.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from skipvsr.api import Upscaler, load
from skipvsr.cli.args import UsageError, default_model, positive_int
from skipvsr.cli.demo import DEMO_CLIP, demo_inputs, psnr_against
from skipvsr.cli.jobs import map_fn, map_view, merged_stats
from skipvsr.frames import MediaError
from skipvsr.routing import POLICIES, Route
from skipvsr.video.heap import tune_allocator
from skipvsr.video.io import MediaInfo, probe
from skipvsr.video.streaming import MapVideo, upscale_media
from skipvsr.weights import REGISTRY, CheckpointError, registered_skip, resolve

MAX_UPLOAD_MB = 20
MAX_FRAMES = 32  # frames upscaled per job: the first ones of the clip
MAX_WIDTH, MAX_HEIGHT = 320, 240  # input frame size, either orientation
DEFAULT_FRAMES = 8
DEMO_SHRINK = 8  # the demo's 160x90 -> 640x360, scored against the real 640x360 picture
KEEP_JOBS = 4  # finished jobs whose files stay on disk (Gradio serves its own copies)
CAPS = (
    f"Clips up to {MAX_UPLOAD_MB} MB and {MAX_WIDTH}x{MAX_HEIGHT} pixels; the first "
    f"{MAX_FRAMES} frames at most are upscaled. Longer or larger videos: `skipvsr upscale`."
)


@dataclass(frozen=True)
class JobResult:
    """What one page job wrote (H.264 mp4 files) and measured.

    ``mac_fraction`` of the full network's MACs without SpyNet (frame-weighted over chunks),
    ``seconds_per_frame`` model time per output frame, ``psnr`` RGB dB against the real picture
    (demo clip only, else ``None``), ``lr_size`` and ``sr_size`` as ``(width, height)``.
    """

    output: Path
    routing: Path
    side_by_side: Path
    frames: int
    lr_size: tuple[int, int]
    sr_size: tuple[int, int]
    mac_fraction: float
    seconds_per_frame: float
    psnr: float | None = None

    def summary(self) -> str:
        """One Markdown line of the measured figures."""
        (lw, lh), (sw, sh) = self.lr_size, self.sr_size
        parts = [
            f"**MAC fraction {self.mac_fraction:.3f}** (of the full network, without SpyNet)",
            f"**{self.seconds_per_frame:.2f} s/frame** (model, this machine)",
            f"{self.frames} frame{'s' * (self.frames != 1)}, {lw}x{lh} -> {sw}x{sh}",
        ]
        if self.psnr is not None:
            parts.append(f"**PSNR {self.psnr:.2f} dB** (RGB) against the real {sw}x{sh} picture")
        return " · ".join(parts)


def available_models() -> list[str]:
    """Registered models whose weights are on this machine, the default first."""
    names = []
    for name in REGISTRY:
        try:
            resolve(name)
        except CheckpointError:
            continue
        names.append(name)
    first = default_model()
    return sorted(names, key=lambda n: n != first)


def check_upload(path: str | os.PathLike | None) -> MediaInfo:
    """The probed upload, or :class:`MediaError` with one line saying what the page takes."""
    if path is None:
        raise MediaError("clip: nothing uploaded (expected a video file, or pick the demo clip)")
    path = Path(path)
    size_mb = path.stat().st_size / 1e6
    if size_mb > MAX_UPLOAD_MB:
        raise MediaError(
            f"clip: {path.name} is {size_mb:.1f} MB (expected at most {MAX_UPLOAD_MB} MB)"
        )
    try:
        info = probe(path)
    except MediaError:
        raise MediaError(
            f"clip: {path.name} is not a video this page can read (expected mp4, mkv, mov, webm, "
            "avi, ...)"
        ) from None
    if max(info.width, info.height) > MAX_WIDTH or min(info.width, info.height) > MAX_HEIGHT:
        raise MediaError(
            f"clip: {path.name} is {info.width}x{info.height} (expected at most "
            f"{MAX_WIDTH}x{MAX_HEIGHT}; shrink it, or use `skipvsr upscale`)"
        )
    return info


@functools.lru_cache(maxsize=1)
def _model(name: str) -> Upscaler:
    return load(name)  # one model in memory: the last one asked for


def page_route(
    model: Upscaler,
    policy: str,
    use_budget: bool,
    budget: float,
    threshold: float,
    skip: str = "reuse",
):
    """The :class:`Route` of the page's controls (``skip``: the model's trained skip output),
    ``ValueError`` naming the control if this model cannot take it."""
    if policy not in POLICIES:
        raise ValueError(f"policy: {policy!r} (expected one of {', '.join(POLICIES)})")
    if use_budget:
        route = Route.for_budget(budget, policy=policy, skip=skip)
    elif policy != "learned":
        raise ValueError(f"policy: {policy} routes by a MAC budget (expected the budget control)")
    else:
        route = Route(threshold=threshold, skip=skip)
    model.check_route(route)
    return route


def run_job(
    clip: str | os.PathLike | None,
    model_name: str,
    policy: str,
    use_budget: bool,
    budget: float,
    threshold: float,
    frames: int,
    work: Path,
) -> JobResult:
    """Upscale the first ``frames`` frames of ``clip`` (``None``: the demo clip shrunk x8,
    scored against the real picture) into ``work``, with the routing-map and side-by-side
    videos. Raises ``ValueError`` (``MediaError`` included) with one line for bad input."""
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames: {frames} (expected 1..{MAX_FRAMES})")
    if model_name not in available_models():
        raise ValueError(f"model: {model_name!r} (expected one of {', '.join(available_models())})")
    model = _model(model_name)
    route = page_route(model, policy, use_budget, budget, threshold, registered_skip(model_name))
    work.mkdir(parents=True, exist_ok=True)
    reference = None
    if clip is None:
        clip, reference = demo_inputs(work, DEMO_SHRINK, frames)
    info = check_upload(clip)
    result = JobResult(
        output=work / "upscaled.mp4",
        routing=work / "routing_map.mp4",
        side_by_side=work / "side_by_side.mp4",
        frames=0,
        lr_size=(info.width, info.height),
        sr_size=(4 * info.width, 4 * info.height),
        mac_fraction=0.0,
        seconds_per_frame=0.0,
    )
    summary = upscale_media(
        clip,
        result.output,
        functools.partial(model.upscale, route=route),
        max_frames=frames,
        maps=(
            MapVideo(result.routing, map_view(model, route.cell)),
            MapVideo(result.side_by_side, map_view(model, route.cell, side_by_side=True)),
        ),
        map_fn=map_fn(model),
        overwrite=True,
    )
    merged = merged_stats(summary)
    return replace(
        result,
        frames=summary.frames,
        mac_fraction=merged.mac_fraction,
        seconds_per_frame=merged.seconds / summary.frames,
        psnr=None if reference is None else psnr_against(result.output, reference),
    )


def _prune(root: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` job folders under ``root``."""
    jobs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in jobs[: max(len(jobs) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)


def build_page(root: Path):
    """The Gradio page (``gradio.Blocks``); jobs write under ``root``."""
    import gradio as gr

    models = available_models()
    demo_choice = f"Demo clip ({DEMO_CLIP}, 160x90 -> 640x360, with a reference)"
    upload_choice = "My upload"

    tracker = gr.Progress(track_tqdm=True)  # Gradio finds it as a default argument

    def job(clip, source, model_name, policy, control, budget, threshold, frames, progress=tracker):
        progress(0, desc="starting")
        _prune(root, KEEP_JOBS - 1)
        try:
            result = run_job(
                None if source == demo_choice else clip,
                model_name,
                policy,
                control == "MAC budget",
                float(budget),
                float(threshold),
                int(frames),
                Path(tempfile.mkdtemp(dir=root)),
            )
        except (ValueError, OSError, RuntimeError) as e:
            raise gr.Error(str(e).strip().splitlines()[0] or type(e).__name__) from None
        return str(result.output), str(result.routing), str(result.side_by_side), result.summary()

    with gr.Blocks(title="skipvsr", delete_cache=(600, 3600)) as page:
        gr.Markdown(
            "# skipvsr: x4 video super-resolution that skips blocks where it can\n"
            "Upload a clip or take the demo clip, pick a model and a MAC budget (or a "
            "threshold), and see the output, where the compute went per patch (blocks run of "
            f"60, both branches), and bicubic / output / map side by side. {CAPS}"
        )
        with gr.Row():
            with gr.Column():
                source = gr.Radio(
                    [upload_choice, demo_choice],
                    value=upload_choice,
                    label="Clip",
                    elem_id="source",
                )
                clip = gr.Video(label="Upload", sources=["upload"], elem_id="clip")
                model = gr.Dropdown(models, value=models[0] if models else None, label="Model")
                policy = gr.Dropdown(list(POLICIES), value="learned", label="Policy")
                control = gr.Radio(
                    ["MAC budget", "threshold"], value="MAC budget", label="Route by"
                )
                budget = gr.Slider(0.25, 1.0, 0.63, step=0.01, label="MAC budget", elem_id="budget")
                threshold = gr.Slider(0.0, 0.99, 0.9, step=0.01, label="Threshold")
                frames = gr.Slider(
                    1,
                    MAX_FRAMES,
                    DEFAULT_FRAMES,
                    step=1,
                    label=f"Frames (at most {MAX_FRAMES})",
                    elem_id="frames",
                )
                run_button = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column():
                result = gr.Markdown("No run yet.", elem_id="result")
                output = gr.Video(label="Upscaled x4", elem_id="output", interactive=False)
                routing = gr.Video(label="Routing map", elem_id="routing", interactive=False)
                side = gr.Video(label="Bicubic | output | map", elem_id="side", interactive=False)
        run_button.click(
            job,
            [clip, source, model, policy, control, budget, threshold, frames],
            [output, routing, side, result],
        )
    return page


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="a local web page to try routing on a clip (needs [app])")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    p.add_argument("--port", type=positive_int("port", 1), default=7860, help="port (7860)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.port > 65535:
        raise UsageError(f"--port must be <= 65535, got {args.port}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "app: gradio is not installed (pip install 'skipvsr[app]', or make app)"
        ) from None
    tune_allocator()
    with tempfile.TemporaryDirectory(prefix="skipvsr-app-") as root:
        page = build_page(Path(root))
        print(f"skipvsr app: http://{args.host}:{args.port} ({CAPS})", flush=True)
        page.queue(default_concurrency_limit=1).launch(
            server_name=args.host,
            server_port=args.port,
            max_file_size=f"{MAX_UPLOAD_MB}mb",
            allowed_paths=[root],
            quiet=True,
        )
    return 0
