"""Training samples/s of LeNet-5-3 (batch 86, CPU) through the engine's worker loop, beside a plain
tensor loop and the usual torchvision DataLoader loop, in one run. Last line: one JSON object.

    python benchmarks/epoch_throughput.py [--data-dir data] [--samples 8600] [--repeats 3]
"""

import json

import torch
import torch.nn.functional as F
from common import BATCH, arguments, data, dataloader_loop, samples_per_second, seed_model
from torchvision import transforms

from gridsearch.training.loop import train_epoch


def main() -> None:
    args = arguments(__doc__)
    torch.set_num_threads(args.threads)
    data.prepare(args.data_dir)
    train, _ = data.training_splits(args.data_dir, args.samples, 1)
    generator = torch.Generator().manual_seed(0)

    engine_model, engine_optimizer = seed_model()

    def engine() -> int:
        train_epoch(engine_model, engine_optimizer, train, BATCH, generator)
        return len(train)

    images = train.images.float().div(255)  # the plain loop gets the data pre-converted to float
    labels = train.labels
    plain_model, plain_optimizer = seed_model()

    def plain() -> int:
        plain_model.train()
        for index in torch.randperm(len(images)).split(BATCH):
            plain_optimizer.zero_grad()
            F.cross_entropy(plain_model(images[index]), labels[index]).backward()
            plain_optimizer.step()
        return len(images)

    dataloader = dataloader_loop(args.data_dir, args.samples, transforms.ToTensor())
    rates = samples_per_second({"engine": engine, "plain": plain, "dataloader": dataloader}, args.repeats)
    print(
        json.dumps(
            {
                "engine_samples_per_s": round(rates["engine"], 1),
                "plain_samples_per_s": round(rates["plain"], 1),
                "dataloader_samples_per_s": round(rates["dataloader"], 1),
                "ratio_engine_to_plain": round(rates["engine"] / rates["plain"], 3),
                "ratio_dataloader_to_plain": round(rates["dataloader"] / rates["plain"], 3),
                "samples": args.samples,
                "batch_size": BATCH,
                "threads": args.threads,
                "device": "cpu",
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
