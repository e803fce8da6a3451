"""Distillation training of SkipVSR (``skipvsr train --config configs/NAME.yaml`` runs it).

One training step, top to bottom (:func:`train_step`):

1. The frozen teacher (official BasicVSR, fp32, eval, no grad) runs on the LR clip; its SpyNet
   flows are reused by the student (SpyNet is frozen), its features at the target depths
   (6, 12, ..., 30) supervise the estimators and those at the TFA depths the student's trunks.
2. A route is sampled for the step (shared by all DDP ranks): with probability ``full_prob``
   the full network (threshold 0), otherwise a residual-block budget drawn uniformly from
   ``[budget_min, budget_max]``. The student runs with ``execution='mask'`` so it experiences
   the skipping it will do at inference, and one model serves every budget.
3. ``L = L_rec + lambda_mask * L_mask + lambda_error * L_error`` (see :mod:`skipvsr.train.losses`).
   ``L_mask`` reaches only the estimators (their input and the regression distance are
   detached), ``L_rec`` and ``L_error`` only the backbone.

Gradients through a hard skip (``skip_mode``):

* ``hard`` (default): the learned policy with the sampled budget decides with hard masks, as at
  inference. No gradient flows through the decision; the backbone learns to be robust to the
  estimator's own skips (like stochastic depth, but on the patches the estimator picks) and the
  estimator learns only by regression (``L_mask``).
* ``random``: the ``random`` frozen policy with the sampled budget (per-patch stochastic depth),
  independent of the estimator, which still learns by regression on every decision.

Schedules: ``full`` fine-tunes the backbone (without SpyNet, unless ``spynet_lr > 0``) and the
estimators; ``estimator_only`` freezes the backbone, so the student's forward builds a graph
only for the estimators and ``L_rec``/``L_error`` are not computed.

Runs survive: the batch and route of step ``k`` depend only on ``(seed, k)``; checkpoints
(atomic) hold the weights, optimiser, scheduler and RNG states, so a run killed at any moment
and resumed ends with the same weights as an uninterrupted one (same thread count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.distributed as dist
import yaml

from skipvsr import cost
from skipvsr.backbone import BRANCHES, BasicVSR
from skipvsr.frames import to_tensor, to_uint8
from skipvsr.metrics import psnr
from skipvsr.routing import (
    ESTIMATOR_INPUTS,
    PRECISIONS,
    SKIP_OUTPUTS,
    Route,
    split_backward_budget,
)
from skipvsr.signals import on_sigterm
from skipvsr.train.data import ClipSampler, default_cache, load_split
from skipvsr.train.losses import MAPPINGS, charbonnier, feature_alignment_loss, mask_loss
from skipvsr.weights import backward_budgets, load_model

SCHEDULES = ("full", "estimator_only")
SKIP_MODES = ("hard", "random")
TARGETS = ("hr", "teacher")
ESTIMATOR_TARGETS = ("teacher", "reuse")


@dataclass
class TrainConfig:
    """Every training option; YAML keys map one to one onto these fields."""

    # models
    teacher: str = "basicvsr-vimeo-bi"  # registry name or path; "init:<seed>" = random (tests)
    num_feat: int = 64
    num_block: int = 30
    shared_estimator: bool = False
    estimator_inputs: str = "difference"  # difference | difference+feature (ablation)
    init: str = ""  # start the student from a run dir's last.pt, or a SkipVSR model name/file
    # optimisation
    schedule: str = "full"  # full | estimator_only
    steps: int = 1000
    batch_size: int = 1  # per process
    lr: float = 1e-4  # backbone
    estimator_lr: float = 1e-3
    spynet_lr: float = 0.0  # 0: SpyNet frozen and the teacher's flows reused
    lr_min_ratio: float = 0.01  # cosine annealing down to lr * lr_min_ratio
    grad_clip: float = 0.0  # max global grad norm, 0 = off
    adam_eps: float = 1e-8
    # losses
    target: str = "hr"  # hr | teacher (distil the teacher's output: no HR needed)
    charbonnier_eps: float = 1e-6
    lambda_mask: float = 1.0
    lambda_error: float = 0.1
    theta: float = 20.0  # S~ = 1 - tanh(theta * d)
    # d: teacher = distance to the teacher's target-depth features (paper); reuse = RMS error
    # of the reused update against the block's true update (needs skip: reuse)
    estimator_target: str = "teacher"
    target_every: int = 6
    tfa_interval: int = 6  # 0 = no temporal feature alignment
    tfa_mapping: str = "sum2"  # sum | sum2 | max
    # skipping during training
    skip_mode: str = "hard"  # hard | random
    full_prob: float = 0.25
    budget_min: float = 0.1  # residual-block budgets sampled in [budget_min, budget_max]
    budget_max: float = 0.9
    cell: int = 16
    skip: str = "reuse"  # reuse | identity: what a skipped block gives (routing.Route.skip)
    refresh: int = 0  # full-cost frame every N frames (routing.Route.refresh)
    estimator_stride: int = 1  # routing.Route.estimator_stride; every shipped model used 1
    # a registered model whose measured branch split (weights.backward_budgets) the training
    # and validation budgets are split by, as inference splits them; "" = each branch spends
    # the budget
    branch_split: str = ""
    # data
    data: str = ""  # cache root ("" = $SKIPVSR_CACHE/train or ~/.cache/skipvsr/train)
    num_frames: int = 8
    patch: int = 64
    seed: int = 0
    # validation on the held-out clips
    val_every: int = 100  # steps, 0 = off
    val_frames: int = 8
    val_patch: int = 96
    val_budgets: list[float] = field(default_factory=lambda: [1.0, 0.63, 0.43])
    val_at_start: bool = True  # validate before the first step (the untrained baseline)
    # run
    run_dir: str = "runs/skipvsr"  # relative to the working directory
    threads: int = 2
    device: str = "auto"  # auto | cpu | cuda
    # where teacher and student compute in bfloat16 (routing.PRECISIONS); weights, optimiser
    # state and gradients stay float32, and validation always runs in fp32
    precision: str = "fp32"
    ckpt_minutes: float = 10.0
    ckpt_every: int = 0  # steps, 0 = by time only
    stop_after: int = 0  # stop (with a checkpoint) after this many steps of this invocation


def _coerce(name: str, default, value):
    """Check/convert ``value`` for the field whose default is ``default``."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config {name}: expected true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ValueError(f"config {name}: expected a list, got {value!r}")
        return [float(v) for v in value]
    if not isinstance(value, type(default)) or isinstance(value, bool):
        raise ValueError(f"config {name}: expected {type(default).__name__}, got {value!r}")
    return value


def make_config(values: dict, overrides: list[str] = ()) -> TrainConfig:
    """A checked :class:`TrainConfig` from a YAML mapping plus ``key=value`` overrides."""
    values = dict(values or {})
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"--set {item}: the value is not valid YAML") from None
    defaults = TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
    cfg = TrainConfig(**{k: _coerce(k, getattr(defaults, k), v) for k, v in values.items()})
    checks = [
        (cfg.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
        (
            cfg.estimator_inputs in ESTIMATOR_INPUTS,
            f"estimator_inputs must be one of {ESTIMATOR_INPUTS}",
        ),
        (cfg.skip_mode in SKIP_MODES, f"skip_mode must be one of {SKIP_MODES}"),
        (cfg.target in TARGETS, f"target must be one of {TARGETS}"),
        (
            cfg.estimator_target in ESTIMATOR_TARGETS,
            f"estimator_target must be one of {ESTIMATOR_TARGETS}",
        ),
        (cfg.skip in SKIP_OUTPUTS, f"skip must be one of {SKIP_OUTPUTS}"),
        (cfg.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
        (cfg.estimator_target != "reuse" or cfg.skip == "reuse",
         "estimator_target: reuse needs skip: reuse"),
        (cfg.refresh >= 0, "refresh must be >= 0"),
        (not cfg.branch_split or backward_budgets(cfg.branch_split) is not None,
         f"branch_split must name a registered model with a measured split, got "
         f"{cfg.branch_split!r}"),
        (cfg.estimator_stride >= 1 and cfg.cell % cfg.estimator_stride == 0,
         "estimator_stride must be >= 1 and divide cell"),
        (cfg.tfa_mapping in MAPPINGS, f"tfa_mapping must be one of {MAPPINGS}"),
        (cfg.steps >= 1 and cfg.batch_size >= 1, "steps and batch_size must be >= 1"),
        (cfg.num_frames >= 2, "num_frames must be >= 2"),
        (0.0 <= cfg.full_prob <= 1.0, "full_prob must be in [0, 1]"),
        (0.0 <= cfg.budget_min <= cfg.budget_max <= 1.0, "need 0 <= budget_min <= budget_max <= 1"),
        (cfg.tfa_interval >= 0 and cfg.target_every >= 1, "bad tfa_interval / target_every"),
        (cfg.num_block % cfg.target_every == 0, "num_block must be a multiple of target_every"),
        (cfg.tfa_interval == 0 or cfg.num_block % cfg.tfa_interval == 0,
         "num_block must be a multiple of tfa_interval"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ValueError(f"config: {message}")
    return cfg


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> TrainConfig:
    """The config of a YAML file plus ``key=value`` overrides; without a ``run_dir`` the run
    goes to ``runs/<file stem>`` (relative to the working directory)."""
    values = {}
    if path is not None:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ValueError(f"{path}: not valid YAML{at} ({getattr(e, 'problem', e)})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a YAML mapping of config keys")
        values.setdefault("run_dir", str(Path("runs") / Path(path).stem))
    return make_config(values, overrides)


# -- models ---------------------------------------------------------------------------------
def build_teacher(cfg: TrainConfig) -> BasicVSR:
    """The frozen teacher: official weights, or a random model for ``teacher: init:<seed>``."""
    if cfg.teacher.startswith("init:"):
        torch.manual_seed(int(cfg.teacher[5:]))
        teacher = BasicVSR(cfg.num_feat, cfg.num_block)
    else:
        teacher = load_model(cfg.teacher)
        if (teacher.num_feat, teacher.num_block) != (cfg.num_feat, cfg.num_block):
            raise ValueError(
                f"teacher {cfg.teacher} has num_feat={teacher.num_feat}, "
                f"num_block={teacher.num_block}; the config says {cfg.num_feat}, {cfg.num_block}"
            )
    teacher.eval().float()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_student(cfg: TrainConfig, teacher: BasicVSR) -> BasicVSR:
    """The teacher's weights plus estimators with ``S = sigmoid(0) = 0.5`` (mid-range) and tiny
    seeded weights that break ties between patches."""
    student = BasicVSR(
        cfg.num_feat,
        cfg.num_block,
        estimators=True,
        shared_estimator=cfg.shared_estimator,
        estimator_inputs=cfg.estimator_inputs,
    )
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all("estimator" in k for k in missing), (missing, unexpected)
    gen = torch.Generator().manual_seed(cfg.seed)
    for est in (student.backward_estimator, student.forward_estimator):
        with torch.no_grad():
            est.weight.copy_(torch.randn(est.weight.shape, generator=gen) * 1e-2)
            est.bias.zero_()
    if cfg.init:
        init = Path(cfg.init)
        if init.is_dir():
            weights = load_checkpoint(init / "last.pt")["student"]
        else:  # a registry name or file; an estimator-only file brings its named backbone
            weights = load_model(cfg.init).state_dict()
        student.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    student.spynet.requires_grad_(cfg.spynet_lr > 0 and cfg.schedule == "full")
    backbone_trains = cfg.schedule == "full"
    for name, p in student.named_parameters():
        if "estimator" not in name and not name.startswith("spynet."):
            p.requires_grad_(backbone_trains)
    return student


def make_optimizer(cfg: TrainConfig, student: BasicVSR):
    """Adam (betas 0.9, 0.999) with three groups and a cosine schedule over ``steps``."""
    groups = {"estimator": [], "spynet": [], "backbone": []}
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        if "estimator" in name:
            groups["estimator"].append(p)
        elif name.startswith("spynet."):
            groups["spynet"].append(p)
        else:
            groups["backbone"].append(p)
    lrs = {"estimator": cfg.estimator_lr, "spynet": cfg.spynet_lr, "backbone": cfg.lr}
    opt = torch.optim.Adam(
        [{"params": ps, "lr": lrs[k], "name": k} for k, ps in groups.items() if ps],
        betas=(0.9, 0.999),
        eps=cfg.adam_eps,
    )

    def cosine(step: int) -> float:
        r = cfg.lr_min_ratio
        return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, cosine)


def _spynet_trains(spynet: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in spynet.parameters())


def routing_fields(cfg: TrainConfig) -> dict:
    """The :class:`Route` fields the config fixes for training and validation alike."""
    return dict(
        cell=cfg.cell, skip=cfg.skip, refresh=cfg.refresh, estimator_stride=cfg.estimator_stride
    )


def learned_route(cfg: TrainConfig, block_budget: float, **fields) -> Route:
    """The ``learned`` route at ``block_budget``, split between the branches as the model
    ``cfg.branch_split`` splits it at inference (:class:`skipvsr.api.Upscaler`), if set."""
    if cfg.branch_split:
        points = backward_budgets(cfg.branch_split)
        fields["backward_budget"] = split_backward_budget(points, block_budget)
    return Route("learned", block_budget=block_budget, **routing_fields(cfg), **fields)


# -- one step -------------------------------------------------------------------------------
def sample_route(cfg: TrainConfig, step: int) -> Route:
    """The training route of ``step`` (mask execution), a function of ``(seed, step)`` only."""
    rng = np.random.default_rng([cfg.seed, step, 1])
    common = dict(execution="mask", **routing_fields(cfg))
    if rng.random() < cfg.full_prob:
        return Route("learned", threshold=0.0, **common)
    budget = float(rng.uniform(cfg.budget_min, cfg.budget_max))
    if cfg.skip_mode == "random":
        return Route("random", block_budget=budget, seed=int(rng.integers(2**31)), **common)
    return learned_route(cfg, budget, execution="mask")


def depths(cfg: TrainConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(target depths, TFA depths)``: every ``target_every`` / ``tfa_interval`` blocks."""
    targets = tuple(range(cfg.target_every, cfg.num_block + 1, cfg.target_every))
    tfa = (
        tuple(range(cfg.tfa_interval, cfg.num_block + 1, cfg.tfa_interval))
        if cfg.tfa_interval
        else ()
    )
    return targets, tfa


def train_step(
    cfg: TrainConfig,
    teacher: BasicVSR,
    student: BasicVSR,
    lr: torch.Tensor,
    hr: torch.Tensor | None,
    route: Route,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward both networks on ``lr`` ``(B, T, 3, p, p)`` and return the total loss (with
    grad) and its terms. ``hr`` ``(B, T, 3, 4p, 4p)`` is needed only for ``target: hr``."""
    target_depths, tfa_depths = depths(cfg)
    full = cfg.schedule == "full"
    reuse = cfg.estimator_target == "reuse"
    with torch.no_grad():
        flows = teacher.compute_flows(lr, cfg.precision)
        ref = None
        if full or not reuse:  # an estimator-only run on reuse errors needs no teacher pass
            taps = tuple(sorted(set(() if reuse else target_depths) | set(tfa_depths)))
            ref = teacher(lr, flows=flows, taps=taps, precision=cfg.precision)
    student_flows = None if _spynet_trains(student.spynet) else flows
    targets = None
    if not reuse:
        targets = {b: {d: ref.features[b][d] for d in target_depths} for b in BRANCHES}
    out = student(
        lr,
        route=route,
        flows=student_flows,
        taps=tfa_depths if full else (),
        targets=targets,
        target_every=cfg.target_every,
        reuse_targets=reuse,
        precision=cfg.precision,
    )
    l_mask = mask_loss(out.scores["backward"] + out.scores["forward"], cfg.theta)
    total = cfg.lambda_mask * l_mask
    terms = {"mask": l_mask.item()}
    if full:
        goal = ref.sr if cfg.target == "teacher" else hr
        l_rec = charbonnier(out.sr, goal, cfg.charbonnier_eps)
        l_err = sum(
            feature_alignment_loss(out.features[b], ref.features[b], tfa_depths, cfg.tfa_mapping)
            for b in BRANCHES
        ) / len(BRANCHES)
        total = total + l_rec + cfg.lambda_error * l_err
        terms.update(rec=l_rec.item(), error=l_err.item())
    executed = torch.stack([out.executed[b] for b in BRANCHES]).mean()
    terms.update(total=total.item(), executed=float(executed))
    return total, terms


# -- validation -----------------------------------------------------------------------------
def network(cfg: TrainConfig) -> cost.NetworkShape:
    return cost.NetworkShape(num_feat=cfg.num_feat, num_block=cfg.num_block)


@torch.no_grad()
def validate(cfg: TrainConfig, student: BasicVSR, clips, device: torch.device) -> dict[str, float]:
    """PSNR (RGB, dB, on the rounded uint8 output) and MAC fraction of the student on a centred
    ``val_patch`` LR crop of the first ``val_frames`` frames of each held-out clip, for every
    MAC budget in ``val_budgets`` (routing on a ``cell`` grid, inference ``gather`` path)."""
    student.eval()
    net = network(cfg)
    results: dict[str, float] = {}
    for budget in cfg.val_budgets:
        psnrs, macs = [], []
        route = None
        if budget < 1.0:
            # tiny nets: the non-block floor is near 1, so budgets below it run no block
            blocks = cost.block_fraction_for_budget(budget, net, clamp=True)
            route = learned_route(cfg, blocks)
        for clip in clips:
            t, h, w = clip.lr.shape[:3]
            p, n = min(cfg.val_patch, h, w), min(cfg.val_frames, t)
            y, x = (h - p) // 2, (w - p) // 2
            lr = to_tensor(clip.lr[:n, y : y + p, x : x + p])[None].to(device)
            hr = np.asarray(clip.hr[:n, 4 * y : 4 * (y + p), 4 * x : 4 * (x + p)])
            out = student(lr, route=route)
            sr = to_uint8(out.sr[0])
            psnrs.append(float(np.mean([psnr(a, b) for a, b in zip(sr, hr, strict=True)])))
            executed = torch.stack([out.executed[b] for b in BRANCHES]).mean()
            macs.append(cost.mac_fraction(float(executed), net))
        results[f"psnr@{budget:g}"] = float(np.mean(psnrs))
        results[f"mac@{budget:g}"] = float(np.mean(macs))
    student.train()
    return results


# -- checkpoints ----------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically: a temp file in the same folder, then ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    """Global RNG states as tensors and plain numbers (loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"]), py["gauss_next"]))


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A training checkpoint, read with ``weights_only=True`` like every checkpoint."""
    return torch.load(path, map_location=device, weights_only=True)


# -- the loop -------------------------------------------------------------------------------
def _init_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """``(rank, world, device)``; joins the process group when launched by torchrun/spawn."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


@dataclass
class TrainState:
    """What a run carries from step to step, and what :func:`write_checkpoint` saves."""

    student: BasicVSR
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: ClipSampler
    step: int = 0
    elapsed: float = 0.0  # seconds spent in steps, over all invocations


def write_checkpoint(path: Path, cfg: TrainConfig, state: TrainState) -> None:
    """Save ``state`` with the RNG states and ``cfg`` to ``path`` (atomically)."""
    save_checkpoint(
        path,
        {
            "step": state.step,
            "elapsed": state.elapsed,
            "student": state.student.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "rng": rng_state(),
            "sampler": state.sampler.state_dict(),
            "config": dataclasses.asdict(cfg),
        },
    )


def restore_checkpoint(path: Path, state: TrainState, device: torch.device) -> None:
    """Load the checkpoint at ``path`` into ``state`` and the global RNGs."""
    saved = load_checkpoint(path, device)
    state.student.load_state_dict(saved["student"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    state.step, state.elapsed = saved["step"], saved["elapsed"]


def log_line(log: TextIO, line: str) -> None:
    """Print ``line`` and append it to the run's log file."""
    print(line, flush=True)
    log.write(line + "\n")
    log.flush()


def log_validation(writer, log: TextIO, results: dict[str, float], step: int) -> None:
    """Log :func:`validate`'s ``results`` at ``step`` to the log file and TensorBoard."""
    log_line(log, f"val step {step} " + " ".join(f"{k} {v:.4f}" for k, v in results.items()))
    for key, value in results.items():
        writer.add_scalar(f"val/{key}", value, step)


def log_step(writer, log: TextIO, cfg: TrainConfig, state: TrainState, terms, route, dt) -> None:
    """Log one step's loss terms, budget, learning rate and time."""
    budget = route.block_budget if route.block_budget is not None else 1.0
    log_line(
        log,
        f"step {state.step}/{cfg.steps} "
        + " ".join(f"{k} {v:.5f}" for k, v in terms.items())
        + f" budget {budget:.3f} lr {state.scheduler.get_last_lr()[-1]:.2e} s/it {dt:.2f}",
    )
    for k, v in terms.items():
        writer.add_scalar(f"train/{k}", v, state.step)
    writer.add_scalar("train/s_per_it", dt, state.step)


def optimizer_step(cfg: TrainConfig, state: TrainState, loss: torch.Tensor, world: int) -> None:
    """Backward, average gradients over ``world`` processes, clip, and step."""
    params = [p for p in state.student.parameters() if p.requires_grad]
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if world > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(world)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    state.optimizer.step()
    state.scheduler.step()


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train (or resume) the run in ``cfg.run_dir``; returns the path of the last checkpoint.

    SIGTERM finishes the current step, writes a checkpoint and returns.
    """
    torch.set_num_threads(cfg.threads)
    rank, world, device = _init_distributed(cfg)
    run = Path(cfg.run_dir)
    ckpt_path = run / "last.pt"
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    teacher = build_teacher(cfg).to(device)
    student = build_student(cfg, teacher).to(device)
    opt, sched = make_optimizer(cfg, student)
    need_hr = cfg.target == "hr" and cfg.schedule == "full"
    root = cfg.data or str(default_cache())
    sampler = ClipSampler(
        load_split(root, "train", with_hr=need_hr), cfg.num_frames, cfg.patch, cfg.seed
    )
    val_clips = load_split(root, "val") if cfg.val_every and rank == 0 else []
    state = TrainState(student, opt, sched, sampler)
    if resume:
        restore_checkpoint(ckpt_path, state, device)

    stop = threading.Event()  # set by SIGTERM: finish the step, checkpoint, return
    with contextlib.ExitStack() as stack:
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter  # slow import, rank 0 only

            stack.enter_context(on_sigterm(lambda signum: stop.set()))
            writer = stack.enter_context(contextlib.closing(SummaryWriter(str(run / "tb"))))
            log = stack.enter_context(open(run / "train.log", "a"))
        student.train()
        last_ckpt, done_here = time.monotonic(), 0
        # the curve starts at the teacher with untrained estimators
        if state.step == 0 and val_clips and cfg.val_at_start:
            log_validation(writer, log, validate(cfg, student, val_clips, device), state.step)
        while state.step < cfg.steps:
            t0 = time.perf_counter()
            batch = sampler.batch(state.step, cfg.batch_size, rank, world)
            lr = batch.lr.to(device)
            hr = batch.hr.to(device) if batch.hr is not None else None
            route = sample_route(cfg, state.step)
            loss, terms = train_step(cfg, teacher, student, lr, hr, route)
            optimizer_step(cfg, state, loss, world)
            state.step += 1
            done_here += 1
            dt = time.perf_counter() - t0
            state.elapsed += dt
            if rank == 0:
                log_step(writer, log, cfg, state, terms, route, dt)
                if cfg.val_every and state.step % cfg.val_every == 0 and val_clips:
                    results = validate(cfg, student, val_clips, device)
                    log_validation(writer, log, results, state.step)
            stopping = stop.is_set() or (cfg.stop_after and done_here >= cfg.stop_after)
            due = (
                cfg.ckpt_every and state.step % cfg.ckpt_every == 0
            ) or time.monotonic() - last_ckpt >= cfg.ckpt_minutes * 60
            if due or stopping or state.step == cfg.steps:
                if rank == 0:
                    write_checkpoint(ckpt_path, cfg, state)
                last_ckpt = time.monotonic()
            if stopping:
                break
    if world > 1:
        dist.barrier()
    return ckpt_path
