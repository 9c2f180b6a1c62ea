"""Cost of data augmentation: augmented-epoch samples/s ÷ plain-epoch samples/s through the engine's
batched augmentation, and the same ratio for torchvision's per-sample DataLoader pipeline, in one run.
Last line: one JSON object.

    python benchmarks/augmentation_overhead.py [--data-dir data] [--samples 8600] [--repeats 3]

torchvision's ElasticTransform cannot take the study's sigma 35 on a 28x28 image (its blur kernel
would be larger than the image), so its pipeline uses sigma 6 there, the largest round value it takes.
"""

import json
import math

import torch
from common import BATCH, arguments, data, dataloader_loop, samples_per_second, seed_model
from torchvision import transforms

from gridsearch.training.augmentation import AUGMENTATION_DEFAULTS, BatchAugmenter
from gridsearch.training.loop import train_epoch


def torchvision_pipeline() -> transforms.Compose:
    """The study's distortions as torchvision per-sample transforms, applied with probability 0.5."""
    distort = transforms.Compose(
        [
            transforms.RandomAffine(degrees=7.5, translate=(0.1, 0.1), scale=(0.95, 1.05), shear=math.degrees(0.1)),
            transforms.ElasticTransform(alpha=5.5, sigma=6.0),
        ]
    )
    return transforms.Compose([transforms.ToTensor(), transforms.RandomApply([distort], p=0.5)])


def main() -> None:
    args = arguments(__doc__)
    torch.set_num_threads(args.threads)
    data.prepare(args.data_dir)
    train, _ = data.training_splits(args.data_dir, args.samples, 1)
    augmenter = BatchAugmenter(**AUGMENTATION_DEFAULTS)

    def engine_loop(augment):
        model, optimizer = seed_model()
        generator = torch.Generator().manual_seed(0)

        def loop() -> int:
            train_epoch(model, optimizer, train, BATCH, generator, augment)
            return len(train)

        return loop

    rates = samples_per_second(
        {
            "engine_plain": engine_loop(None),
            "engine_augmented": engine_loop(augmenter),
            "torchvision_plain": dataloader_loop(args.data_dir, args.samples, transforms.ToTensor()),
            "torchvision_augmented": dataloader_loop(args.data_dir, args.samples, torchvision_pipeline()),
        },
        args.repeats,
    )
    print(
        json.dumps(
            {
                "ratio_engine_aug_to_plain": round(rates["engine_augmented"] / rates["engine_plain"], 3),
                "ratio_torchvision_aug_to_plain": round(rates["torchvision_augmented"] / rates["torchvision_plain"], 3),
                **{f"{name}_samples_per_s": round(rate, 1) for name, rate in rates.items()},
                "samples": args.samples,
                "batch_size": BATCH,
                "threads": args.threads,
                "device": "cpu",
            }
        )
    )


if __name__ == "__main__":
    main()
