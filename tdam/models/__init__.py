"""TD and baseline models (timm ResNet, ConvNeXt, MobileNetV3), and :func:`add_td` for one's own CNN.

The one place for the model choices: ``ARCHS``, ``ATTENTIONS`` and the default TD placement/options in
:mod:`.factory`; ``TD_MODES``, ``TD_ORDERS``, ``TD_FEEDBACKS``, ``TD_POOLS`` in :mod:`.td`; the feedback distances
``m`` each block type allows in its ``m_layers`` (:mod:`.blocks`). A model is described by the mapping of
:func:`create_model` keyword arguments (params files' ``model:``), validated by :func:`check_model`.
"""
from .blocks import (TD_BLOCK_TYPES, TDBasicBlock, TDBlock, TDBottleneck, TDConvNeXtBlock, TDInvertedResidual,
                     TDTorchvisionBasicBlock, TDTorchvisionBottleneck, td_block_from)
from .retrofit import add_td
from .factory import (ARCHS, ATTENTIONS, MODEL_OPTIONS, PLAIN_ALIASES, TD_DEFAULTS, TD_OPTION_DEFAULTS,
                      canonical_model, check_model, create_model, is_td_model, model_option_names, model_spec,
                      trained_steps)
from .steps import StepsMixin, TDConvNeXt, TDMobileNetV3, TDResNet, TDTorchvisionResNet
from .td import TD_FEEDBACKS, TD_MODES, TD_ORDERS, TD_POOLS, ConvFeedback, TDAttention
