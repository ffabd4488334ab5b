"""TD and baseline models (timm ResNet, ConvNeXt, MobileNetV3)."""
from .blocks import TDBasicBlock, TDBlock, TDBottleneck, TDConvNeXtBlock, TDInvertedResidual, td_block_from
from .factory import ARCHS, ATTENTIONS, TD_DEFAULTS, create_model, default_td_placement, is_td_model
from .steps import StepsMixin, TDConvNeXt, TDMobileNetV3, TDResNet
from .td import TD_FEEDBACKS, TD_MODES, TD_ORDERS, TD_POOLS, ConvFeedback, TDAttention
