"""The paper's networks for 32x32 RGB images, as ``nn.Sequential`` so they split anywhere: VGG-16 and ResNet-18.

The CIFAR variants: VGG-16's thirteen 3x3 convolutions (batch norm after each) and one linear layer on the
512-channel 1x1 map; ResNet-18's 3x3 stem (no max-pool) and four stages of two basic blocks.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["vgg16", "resnet18"]

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(classes: int = 10) -> nn.Sequential:
    """VGG-16 for 3x32x32 inputs; its first convolution block (conv, BN, ReLU) is modules 0..2."""
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=False)]
            cin = int(v)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, classes))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


def resnet18(classes: int = 100) -> nn.Sequential:
    """ResNet-18 for 3x32x32 inputs; its stem (conv, BN, ReLU) is modules 0..2."""
    blocks: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))
