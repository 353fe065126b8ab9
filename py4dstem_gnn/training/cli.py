"""``py4dstem-gnn train``: the command line of :mod:`py4dstem_gnn.training.train`.

Builds the pattern source of a protocol (orientations, spot selection, augmentation), the fixed
validation sets, and a :class:`~py4dstem_gnn.training.train.Trainer`; see ``py4dstem-gnn train -h``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from typing import Any

from ..data.orientations import IN_PLANE
from .runtime import resolve_device
from .schedules import DECAY_SHAPES, SCHEDULES
from .train import TrainConfig, Trainer

__all__ = ["PROTOCOL_SPLITS", "configure_parser", "run_cli"]

logger = logging.getLogger(__name__)

# -- command line -----------------------------------------------------------------------------
#: protocol -> (manifest split column, training split(s), validation split) of ``train --protocol``.
#: ``known`` trains on the whole pool; its kinematic validation draws fresh orientations of the
#: unseen-type validation groups (seen in training, so only a monitor, not a held-out figure).
PROTOCOL_SPLITS: dict[str, tuple[str, str | tuple[str, ...], str]] = {
    "known": ("split_type", ("train", "val", "test"), "val"),
    "unseen-material": ("split_material", "train", "val"),
    "unseen-type": ("split_type", "train", "val"),
    "legacy": ("split", "train", "val"),
}


def _augment_preset(name: str) -> str:
    """argparse type of ``--augment``: the name if :meth:`AugmentConfig.preset` knows it."""
    from ..data.augment import AugmentConfig

    try:
        AugmentConfig.preset(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``py4dstem-gnn train``."""
    d = TrainConfig()
    parser.description = (
        "Train PE-AG-GMoE on kinematic patterns simulated on the fly from the structure-factor "
        "library (fresh orientations and realism augmentations every step). Rerunning the same "
        "command resumes from <run-dir>/checkpoint.pt. Under torchrun it trains with DDP."
    )
    parser.add_argument("--library", required=True, help="kinematic structure-factor library (HDF5 file or shard folder) from "
                        "`py4dstem-gnn simulate kinematic`, or its tables (.npz) from `py4dstem-gnn export-tables`")
    parser.add_argument("--manifest", default=None, help="structure manifest with the train/val/test split (default: the committed data/manifest.csv.gz)")
    parser.add_argument("--val-set", action="append", default=[], metavar="NAME=PATH", help="stored pattern set(s) for validation (HDF5); the first selects the best weights")
    parser.add_argument("--val-kinematic", type=int, default=1000, metavar="N", help="also validate on N validation-split materials x 2 augmented kinematic patterns (0: off)")
    parser.add_argument("--val-per-material", type=int, default=2, metavar="K",
                        help="patterns per material of the --val-kinematic set (e.g. 1592 x 13 = 20,696 for a loss curve)")
    parser.add_argument("--run-dir", default=d.run_dir)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--accumulate", type=int, default=d.accumulate)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 (bf16 autocast runs only where the device has native bf16)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                        help="learning rate: cosine decay over --steps, or wsd (warm-up, constant, decay over the last "
                             "--decay-steps; rerun with more --steps to continue from the constant-rate checkpoint)")
    parser.add_argument("--decay-steps", type=int, default=None, help="wsd: length of the final decay (default: 20%% of --steps)")
    parser.add_argument("--decay-shape", choices=DECAY_SHAPES, default=d.decay_shape, help="wsd: shape of the decay")
    parser.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="final learning rate as a share of --lr")
    parser.add_argument("--sampler", choices=("numpy", "torch"), default=d.sampler,
                        help="numpy: kinematic patterns made on the CPU; torch: made batched on --device from the "
                             "library's tables (no py4DSTEM needed)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (did not pay on a CPU; try on a GPU)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this many minutes")
    parser.add_argument("--checkpoint-minutes", type=float, default=None, help="also checkpoint every this many minutes")
    parser.add_argument("--stored-train", nargs="+", default=None, metavar="PATH",
                        help="stored patterns of training materials (e.g. Bloch-wave; files or shard folders, "
                             "joined) mixed into every batch; patterns of materials outside the protocol's "
                             "training split are dropped")
    parser.add_argument("--stored-fraction", type=float, default=0.5, help="share of --stored-train patterns in a batch")
    parser.add_argument("--follow-library", action="store_true", help="pick up library shards written while training runs")
    parser.add_argument("--no-augment", action="store_true", help="switch the realism augmentations off")
    parser.add_argument("--augment", type=_augment_preset, default="calibrated",
                        help="augmentation preset (py4dstem_gnn.data.augment.AugmentConfig.preset): calibrated "
                             "(default), uncalibrated, legacy, or detected:<detector preset> (fitted to what "
                             "find_Bragg_disks does on hybrid128_lowdose, hybrid256 or cmos512_highdose)")
    parser.add_argument("--protocol", choices=list(PROTOCOL_SPLITS), default="known",
                        help="which materials train: known = the whole pool (shipped weights), unseen-material / "
                             "unseen-type = the training side of that split, legacy = the old group split")
    parser.add_argument("--axes", choices=["conventional", "primitive"], default="conventional",
                        help="zone axes of the conventional cell (default) or of the primitive cell (legacy)")
    parser.add_argument("--random-fraction", type=float, default=0.2,
                        help="share of patterns at uniformly random orientations (default: %(default)s)")
    parser.add_argument("--tilt-deg", type=float, default=1.0, help="largest zone-axis mis-tilt, degrees")
    parser.add_argument("--selection", choices=["bloch", "legacy"], default="bloch",
                        help="kinematic spot selection: matched to Bloch-wave patterns (default) or py4DSTEM's")
    parser.add_argument("--in-plane", choices=IN_PLANE, default="random",
                        help="in-plane rotation of kinematic patterns: random (default, as detectors see them) or "
                             "py4DSTEM's default frame tied to the crystal axes (experiments only)")
    parser.add_argument(
        "--no-logit-adjustment",
        action="store_true",
        help="export without the logit offsets that undo the class-balanced sampling's prior",
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--eval-every", type=int, default=d.eval_every)
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    parser.add_argument("--balance-power", type=float, default=d.balance_power)
    parser.add_argument("--init-from", default=None, help="start from these weights (name or .safetensors path), e.g. default")
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--model", default="{}", help='JSON overrides of the model config, e.g. \'{"n_layers": 4}\'')
    parser.add_argument("--export", default=None, metavar="DIR", help="at the end, export the final weights (with their card) to DIR/<--name>")
    parser.add_argument("--name", default="default", help="name of the exported weights")
    parser.add_argument("--export-now", action="store_true",
                        help="export the run's last checkpoint to --export/--name (with its card) and exit without training")


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``py4dstem-gnn train``."""
    from ..data.sources import KinematicSource, MixedSource, StoredSource, load_validation_sets

    cfg = TrainConfig(
        run_dir=args.run_dir,
        steps=args.steps,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        bf16=not args.no_bf16,
        seed=args.seed,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        balance_power=args.balance_power,
        init_from=args.init_from,
        device=args.device,
        threads=args.threads,
        model=json.loads(args.model),
        logit_adjustment=not args.no_logit_adjustment,
        schedule=args.schedule,
        decay_steps=args.decay_steps,
        decay_shape=args.decay_shape,
        min_lr_ratio=args.min_lr_ratio,
        sampler=args.sampler,
        compile=args.compile,
        max_minutes=args.max_minutes,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    from ..data.augment import AugmentConfig
    from ..data.kinematic import LEGACY_SELECTION, SpotSelection
    from ..data.structures import load_manifest

    column, train_split, val_split = PROTOCOL_SPLITS[args.protocol]
    augment = False if args.no_augment else AugmentConfig.preset(args.augment)
    recipe = dict(axes=args.axes, random_fraction=args.random_fraction, tilt_deg=args.tilt_deg,
                  selection=SpotSelection() if args.selection == "bloch" else LEGACY_SELECTION, in_plane=args.in_plane)
    if args.sampler == "torch":  # patterns made on the training device from the tables
        from ..data.sources_torch import TorchKinematicSource

        kinematic: Any = functools.partial(TorchKinematicSource, device=resolve_device(cfg.device))
    else:
        kinematic = functools.partial(KinematicSource, follow=args.follow_library)
    source = kinematic(args.library, args.manifest, split=train_split, split_column=column, augment=augment,
                       balance_power=cfg.balance_power, **recipe)
    if args.stored_train:
        allowed = load_manifest(args.manifest).indices(train_split, column)
        stored = StoredSource(args.stored_train, augment=not args.no_augment, balance_power=cfg.balance_power,
                              materials=allowed)
        source = MixedSource(source, stored, args.stored_fraction)
    held_out = None
    if args.protocol in ("unseen-material", "unseen-type"):
        held_out = load_manifest(args.manifest).indices(val_split, column)
    validation = load_validation_sets([] if args.export_now else args.val_set, materials=held_out)
    if args.val_kinematic and not args.export_now:
        val_source = kinematic(args.library, args.manifest, split=val_split, split_column=column, augment=augment,
                               **recipe)
        validation["val_kinematic"] = val_source.fixed_set(per_material=args.val_per_material, seed=1234,
                                                           max_materials=args.val_kinematic)
    trainer = Trainer(cfg, source, validation, data_manifest=source.describe())
    if args.export_now:  # the run as it stands (e.g. stopped by --max-minutes), no training
        if not args.export:
            raise ValueError("--export-now needs --export DIR")
        path = trainer.export(args.export, args.name)
        logger.info("exported step %d of %s to %s", trainer.step, cfg.run_dir, path)
        return 0
    trainer.fit()
    if args.export and trainer.rank == 0 and trainer.step >= cfg.steps:
        # The final weights, not the "best" checkpoint: small validation sets are too noisy to pick
        # among checkpoints (<run-dir>/best.* stays available for those who want it).
        validation_now = trainer.evaluate() if trainer.validation else {}
        trainer.export(args.export, args.name, validation=validation_now, validation_step=trainer.step)
        logger.info("exported the final weights to %s/%s.safetensors", args.export, args.name)
    return 0
