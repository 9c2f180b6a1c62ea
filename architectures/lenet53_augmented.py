"""LeNet-5-3 trained with the seed study's data augmentation (the study's "augmented" model)."""

from architectures import AUGMENTATION, register
from architectures.lenet53 import LeNet53

register(
    "lenet53_augmented",
    LeNet53,
    "LeNet-5-3 trained with random affine + elastic augmentation (the study fine-tuned its best LeNet-5-3 this way)",
    training_params={AUGMENTATION},
)
