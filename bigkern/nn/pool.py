"""Drop-in pooling modules: subclasses of the torch.nn classes of the same name, with the same
constructor, attributes and repr, whose forward runs bigkern.ops."""

import torch

from bigkern import ops
from bigkern.swap import register_swappable


class MaxPool2d(torch.nn.MaxPool2d):
    def forward(self, input):
        return ops.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )


class AvgPool2d(torch.nn.AvgPool2d):
    def forward(self, input):
        return ops.avg_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
            self.divisor_override,
        )


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    def forward(self, input):
        return ops.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    def forward(self, input):
        return ops.adaptive_max_pool2d(input, self.output_size, self.return_indices)


register_swappable(torch.nn.MaxPool2d, MaxPool2d, "max_pool2d")
register_swappable(torch.nn.AvgPool2d, AvgPool2d, "avg_pool2d")
register_swappable(torch.nn.AdaptiveAvgPool2d, AdaptiveAvgPool2d, "adaptive_avg_pool2d")
register_swappable(torch.nn.AdaptiveMaxPool2d, AdaptiveMaxPool2d, "adaptive_max_pool2d")
