"""`distillguard train`: events + labels -> trained, exported, evaluated model bundle."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..model.labels_io import read_labels
from ..model.network import NetworkConfig
from ..model.readers import load_events, load_events_or_skip
from ..model.schema import LABELS, Rejects, SchemaError
from ..model.sessions import DEFAULT_GAP_S
from ..serving.event_log import join_completions
from .labels import MixConfig

log = logging.getLogger(__name__)

# Trained models encode each feature over 16 quantile bins of the training rows: on families
# held out of training this lifted the share flagged (agentic 0.01 -> 0.22, topic sweep
# 0.82 -> 0.94, mixed 0.87 -> 1.00 at 1% human FPR) and flagged fewer benign agent loops.
DEFAULT_PLE_BINS = 16
DEFAULT_SPAN = 16


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    session_gap_s: float = DEFAULT_GAP_S
    split_fractions: tuple = (0.7, 0.15)     # train, val; the rest is test (account-disjoint)
    # Sliding attention (span 16, receptive field 31 <= W = 32): one pass gives every
    # event's score, offline as online (model.network).
    network: NetworkConfig = field(default_factory=lambda: NetworkConfig(ple_bins=DEFAULT_PLE_BINS,
                                                                         attention_span=DEFAULT_SPAN))
    checkpoint_dir: str = "runs/checkpoints"
    # Processes and where they run. devices > 1 trains data-parallel (DDP): every process
    # reads its own shard of the training windows, `batch_size` is per process and the
    # gradients are averaged, so one optimizer step sees devices * batch_size windows.
    devices: int = 1
    strategy: str = "auto"          # see STRATEGIES; "auto" with devices > 1 means "ddp"
    accelerator: str = "cpu"        # "cpu", "gpu" or "auto" (a GPU when torch sees one)


ACCELERATORS = ("cpu", "gpu", "auto")
# "ddp" starts devices - 1 more processes that re-run this command line (the CLI; not for
# code called in-process, e.g. from pytest: use "ddp_spawn" there, it pickles the trainer).
STRATEGIES = ("auto", "ddp", "ddp_spawn")


def local_rank() -> int:
    """0 in the launching process and single-process runs; Lightning's subprocess launcher
    (strategy "ddp") sets LOCAL_RANK in the processes it starts, torchrun sets it too."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def resolve_trainer_devices(cfg: TrainConfig) -> dict:
    """TrainConfig -> L.Trainer(accelerator, devices, strategy, deterministic) keywords, or
    a ValueError naming the option when the combination cannot run on this machine."""
    import torch

    if cfg.accelerator not in ACCELERATORS:
        raise ValueError(f"--accelerator {cfg.accelerator!r}: choose one of {', '.join(ACCELERATORS)}")
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"--strategy {cfg.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if not isinstance(cfg.devices, int) or cfg.devices < 1:
        raise ValueError(f"--devices {cfg.devices!r}: give a whole number of processes >= 1")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    accelerator = cfg.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if gpus else "cpu"
    if accelerator == "gpu":
        if not gpus:
            raise ValueError(f"--accelerator gpu: torch {torch.__version__} sees no CUDA GPU on this machine "
                             "(CPU-only build, no driver, or CUDA_VISIBLE_DEVICES empty); "
                             "use --accelerator cpu (with --devices N for N CPU processes)")
        if cfg.devices > gpus:
            raise ValueError(f"--devices {cfg.devices} with --accelerator gpu: torch sees only {gpus} GPU(s)")
    if cfg.devices > 1 and accelerator == "cpu" and cfg.devices > (os.cpu_count() or 1):
        log.warning("%d CPU processes on %d cores: each gets one thread and they share cores",
                    cfg.devices, os.cpu_count() or 1)
    strategy = cfg.strategy
    if strategy == "auto":
        strategy = "ddp" if cfg.devices > 1 else "auto"
    if strategy != "auto" and accelerator == "cpu":
        from lightning.pytorch.strategies import DDPStrategy

        # gloo is torch's CPU collective backend (nccl is GPU only).
        strategy = DDPStrategy(process_group_backend="gloo",
                               start_method="spawn" if strategy == "ddp_spawn" else "popen")
    # GPU: Lightning's own strategy by name (nccl). deterministic="warn" there: a CUDA kernel
    # without a deterministic version warns instead of stopping the run.
    return dict(accelerator=accelerator, devices=cfg.devices, strategy=strategy,
                deterministic=True if accelerator == "cpu" else "warn")


def _paths(p) -> list[Path]:
    """One path or several (train --events A B): always a list."""
    return [Path(x) for x in p] if isinstance(p, (list, tuple)) else [Path(p)]


def _load_events(events_path, on_error: str, rejects_path):
    """Events of one or several files/directories as one table; with on_error="skip" the
    bad rows of every path go to one rejects file (published only if all loaded)."""
    paths = _paths(events_path)
    if len(paths) == 1:
        return load_events_or_skip(paths[0], on_error, rejects_path, join=join_completions)
    import pyarrow as pa

    if on_error == "fail":
        return pa.concat_tables([load_events(p, join=join_completions) for p in paths]), None
    rejects = Rejects(rejects_path)
    try:
        tables = [load_events(p, on_error=on_error, rejects=rejects, join=join_completions) for p in paths]
    except BaseException:
        rejects.abort()
        raise
    rejects.close()
    return pa.concat_tables(tables), rejects


def _read_labels(labels_path):
    paths = _paths(labels_path)
    if len(paths) == 1:
        return read_labels(paths[0], provenance=True)
    import pyarrow as pa

    return pa.concat_tables([read_labels(p, provenance=True) for p in paths], promote_options="permissive")


def input_files(path: str | Path) -> list[Path]:
    """The files a path's data comes from, for its fingerprint: the file itself, or every
    file under a directory in relative-path order, hidden ones (an event log's part being
    written) left out; `_`-names stay (an event log's completions feed its events)."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    return [f for f in sorted(p.rglob("*"), key=lambda f: f.relative_to(p).as_posix())
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)]


def file_sha256(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _quiet_libraries() -> None:
    """Lightning's banner lines and exporter notes are noise for a CLI user."""
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "torch.onnx", "torch._dynamo", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def write_label_reports(conflicts, unmatched, out: str | Path) -> None:
    """The conflicts / unmatched-rows CSVs beside the bundle, only when there is something
    to report (no empty files beside every bundle); an earlier run's report at the same
    path is removed, never left to look current."""
    from .labels import write_table_csv

    for table, path in zip((conflicts, unmatched), label_report_paths(out)):
        if table.num_rows:
            write_table_csv(table, path)
        else:
            path.unlink(missing_ok=True)


def label_report_paths(out: str | Path) -> tuple[Path, Path]:
    """OUT.label-conflicts.csv and OUT.label-unmatched.csv, beside the bundle directory."""
    out = Path(out)
    return out.with_name(out.name + ".label-conflicts.csv"), out.with_name(out.name + ".label-unmatched.csv")


def train(events_path: str | Path | list, labels_path: str | Path | list, out: str | Path,
          cfg: TrainConfig | None = None, progress: bool = True, extra_fingerprint: dict | None = None,
          on_error: str = "fail", rejects_path: str | Path | None = None,
          on_label_conflict: str = "exclude", mix: "MixConfig | None" = None) -> dict | None:
    """Train, export, calibrate and write the bundle at `out`; returns a summary dict.

    `events_path` / `labels_path`: one path or a list, read together (an event log beside
    the original training data).

    `labels_path` is a labels file or store (docs/labels.md). Sessions with conflicting
    labels are left out (on_label_conflict="exclude") or stop the run ("fail"); they and
    the label rows that matched no session are written to `label_report_paths(out)` and
    counted in the bundle's data fingerprint. `mix` adds simulated traffic for the classes
    it selects (training.labels.MixConfig).

    With cfg.devices > 1 every process runs this function up to the end of `fit`; the
    processes other than global rank 0 then return None, and rank 0 alone exports,
    calibrates and writes the bundle from the best checkpoint."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ..serving.bundle import load_bundle, per_event_probs
    from . import calibration, evaluate
    from . import labels as labels_mod
    from .data import SessionDataModule, concat_prepared, prepare, split_of
    from .export import update_metadata, write_bundle
    from .lightning_module import SessionClassifier

    cfg = cfg or TrainConfig()
    out = Path(out)
    devices_kw = resolve_trainer_devices(cfg)     # before any work: a bad combination fails fast
    launcher = local_rank() == 0                  # writes files before fit (one writer per machine)
    _quiet_libraries()
    t0 = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    events, rejects = _load_events(events_path, on_error, rejects_path if launcher else None)
    labels = _read_labels(labels_path)
    p = prepare(events, labels, cfg.session_gap_s, on_conflict=on_label_conflict)
    if len(p.y) == 0:
        raise SchemaError(f"{', '.join(map(str, _paths(labels_path)))}: no label matches any session of "
                                 f"{', '.join(map(str, _paths(events_path)))}"
                                 + (f" ({p.conflicts.num_rows} session(s) left out for conflicting labels)"
                                    if p.conflicts.num_rows else ""))
    from_labels = {c: int((p.y == i).sum()) for i, c in enumerate(LABELS)}
    mixed = None
    if mix is not None:
        classes = labels_mod.mix_classes(mix, from_labels)
        if classes:
            sim_events, sim_labels, mixed = labels_mod.simulate_mix(
                mix, classes, events.column("account_id").unique().to_numpy(zero_copy_only=False))
            p = concat_prepared(p, prepare(sim_events, sim_labels, cfg.session_gap_s, on_conflict=on_label_conflict))
        else:
            mixed = {"events_requested": mix.events, "events": 0, "classes": [], "class_choice": mix.classes,
                     "min_class_sessions": mix.min_class_sessions}
    if launcher:
        write_label_reports(p.conflicts, p.unmatched, out)
    split = split_of(p.accounts, cfg.seed, cfg.split_fractions)
    for part, name in enumerate(("train", "val")):
        if not (split == part).any():
            raise SchemaError(f"too few labelled accounts ({len(np.unique(p.accounts))}) for a {name} split")
    dm = SessionDataModule(p, split, cfg.network.window, cfg.batch_size, cfg.seed,
                           cfg.network.receptive_field if cfg.network.attention_span else None)
    net_cfg = asdict(cfg.network)
    model = SessionClassifier(net_cfg, dm.class_weights().tolist(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.network.ple_bins:
        # Every DDP process computes the same edges from the same rows (a pure function of
        # data and seed); DDP also broadcasts rank 0's buffers when it wraps the model.
        train_rows = np.concatenate([p.sr.rows[p.sr.starts[i]:p.sr.starts[i + 1]] for i in np.flatnonzero(split == 0)])
        edges = np.quantile(train_rows, np.linspace(0.0, 1.0, cfg.network.ple_bins + 1), axis=0)
        model.net.set_ple_edges(torch.tensor(edges, dtype=torch.float32))
    ckpt = ModelCheckpoint(dirpath=cfg.checkpoint_dir, monitor="val_loss", save_top_k=1,
                           filename="best-{epoch}-{val_loss:.4f}", enable_version_counter=False)
    if launcher:
        Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        for old in Path(cfg.checkpoint_dir).glob("best-*.ckpt"):
            old.unlink()
    # With devices > 1 Lightning swaps each DataLoader's sampler for a DistributedSampler
    # (seeded by the global seed, shuffling the training windows only), so every process
    # reads a distinct shard; WindowDataset.__getitems__ batching works with any sampler.
    trainer = L.Trainer(max_epochs=cfg.epochs, **devices_kw,
                        callbacks=[ckpt], logger=False, enable_progress_bar=progress,
                        enable_model_summary=False, default_root_dir=cfg.checkpoint_dir,
                        num_sanity_val_steps=0, use_distributed_sampler=True)
    trainer.fit(model, datamodule=dm)
    distributed = {"world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
                   "strategy": type(trainer.strategy).__name__,
                   "accelerator": type(trainer.accelerator).__name__}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()   # fit is over; the rest is rank 0's alone
    if not trainer.is_global_zero:
        return None
    best_score = ckpt.best_model_score
    if best_score is None:      # ddp_spawn hands back the path to the launching process, not the score
        state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
        best_score = next(v["best_model_score"] for k, v in state["callbacks"].items()
                          if k.startswith("ModelCheckpoint"))
    best = SessionClassifier.load_from_checkpoint(ckpt.best_model_path, map_location="cpu", weights_only=False)
    net = best.net.eval()
    train_s = time.perf_counter() - t0

    simulated = p.sources == labels_mod.SIMULATED
    label_files = [f for lp in _paths(labels_path) for f in input_files(lp)]
    fingerprint = {"sha256": file_sha256([f for e in _paths(events_path) for f in input_files(e)] + label_files), "events": len(events),
                   "sessions": int(len(p.y)), "unlabelled_sessions": p.n_unlabelled,
                   "sessions_per_class": {LABELS[i]: int((p.y == i).sum()) for i in range(len(LABELS))},
                   "labels": {"sha256": file_sha256(label_files), "files": len(label_files),
                              "rows": int(labels.num_rows),
                              "conflicting_sessions": int(p.conflicts.num_rows),
                              "unmatched_rows": int(p.unmatched.num_rows)},
                   "sessions_per_class_by_source": {
                       "labels": {LABELS[i]: int(((p.y == i) & ~simulated).sum()) for i in range(len(LABELS))},
                       "simulated": {LABELS[i]: int(((p.y == i) & simulated).sum()) for i in range(len(LABELS))}},
                   **({"simulated_mix": mixed} if mixed is not None else {}),
                   "split_sessions": {s: int((split == i).sum()) for i, s in enumerate(("train", "val", "test"))},
                   **({"skipped_rows": rejects.count} if rejects is not None else {}),
                   **(extra_fingerprint or {})}
    train_config = asdict(cfg)
    # Write once to score validation/test with the exported ONNX graph itself, so the
    # thresholds and metrics describe exactly what serving runs; then rewrite metadata.
    common = dict(train_config=train_config, data_fingerprint=fingerprint, session_gap_s=cfg.session_gap_s)
    from ..serving.policy import DEFAULT_THRESHOLDS, PolicyConfig, session_scores
    write_bundle(out, net, thresholds=DEFAULT_THRESHOLDS, metrics={}, **common)
    bundle = load_bundle(out, threads=0)
    raw_events = per_event_probs(bundle, p.sr)
    last = p.sr.starts[1:] - 1
    raw_probs = raw_events[last]
    dist = LABELS.index("distillation_harvesting")
    val, test = split == 1, split == 2
    human = p.y == LABELS.index("human")
    # Calibrate on validation sessions (score at the last event), accumulate the calibrated
    # per-event scores into session_score (serving.policy), then fix the action thresholds
    # on validation humans' *highest* session_score: a threshold's human rate is then the
    # share of people acted on at any request, the cost a user sees.
    T = calibration.fit_temperature(raw_probs[val], p.y[val])
    probs = calibration.apply_temperature(raw_probs, T)
    policy = PolicyConfig()
    seg = np.repeat(np.arange(len(p.y)), p.sr.lengths)
    score = session_scores(calibration.apply_temperature(raw_events, T)[:, dist], seg, policy, len(p.y))
    peak = np.maximum.reduceat(score, p.sr.starts[:-1]) if len(score) else score
    th = calibration.action_thresholds(peak[val & human])
    # Occluding a reason group sets its inputs to what a typical person's requests show.
    baseline = np.median(p.sr.rows[np.repeat((split == 0) & human, p.sr.lengths)], axis=0)
    metrics = {"train_seconds": round(train_s, 1), "best_val_loss": float(best_score),
               "epochs": cfg.epochs, "distributed": distributed,
               "calibration_val": calibration.calibration_summary(raw_probs[val], p.y[val], T)}
    if test.any():
        metrics["test"] = evaluate.compute_metrics(p.y[test], probs[test], p.accounts[test], n_boot=100,
                                                   seed=cfg.seed, families=p.families[test],
                                                   scores=score[last][test])
        metrics["test_ece"] = calibration.expected_calibration_error(probs[test], p.y[test])["ece"]
    thresholds = th["thresholds"]
    policy = PolicyConfig(thresholds=thresholds)
    update_metadata(out, thresholds=thresholds, threshold_details=th["details"], metrics=metrics,
                    calibration={"method": "temperature", "temperature": T}, policy=policy.to_dict(),
                    occlusion_baseline=[float(v) for v in baseline])
    return {"bundle": str(out), "thresholds": thresholds, "metrics": metrics, "fingerprint": fingerprint,
            "rejects": rejects, "conflicts": p.conflicts, "unmatched": p.unmatched,
            "label_reports": label_report_paths(out)}
