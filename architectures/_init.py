"""The seed study's weight initialisation, shared by its architectures."""

from torch import nn


def study_init(module: nn.Module) -> None:
    """Xavier-normal conv/linear weights with N(0, 1) biases; BatchNorm weights ~ N(1, 0.02), biases 0.

    Use as ``model.apply(study_init)``.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.normal_(module.bias, 0.0, 1.0)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
