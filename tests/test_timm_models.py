"""timm's own model tests (``tests/test_models.py`` of timm 1.0.31, the pinned version), run over tdam's registered models.

Vendored from timm's repository (Apache-2.0, https://github.com/huggingface/pytorch-image-models, tag v1.0.31): the
generic tests that apply to every CNN classifier, with their checks unchanged, parametrised over the 23 names tdam
registers (``td_*``, ``se_*``, ``cbam_*``, ``eca_*``, ``fca_*``) instead of ``timm.list_models()``. Changes:

- input sizes: timm's targets (128-384 px) are lowered to ``TARGET_SIZE`` = 64 px, batch sizes kept (1; 2 for
  backward), so the suite runs on two CPU cores; the ``default_cfgs`` test keeps timm's full 224 px because it runs on
  the meta device (no compute). The default tier runs TD on each architecture family and two baselines (``FAST``);
  the ResNet-34/50/101 variants are marked ``slow`` (``make test-slow``) to keep ``make test`` short.
- not vendored: ``test_model_inference`` (downloads weights and reference tensors from the Hugging Face Hub),
  ``test_model_forward_torchscript`` and the other TorchScript tests (TorchScript is not supported), and the tests of
  other architectures' own features (ViT, NaFlex, Swin, EfficientNet space-to-depth, ...).
- added for the issues timm's suite found: ``features_only`` in both feature classes with ``out_indices`` and
  ``output_stride``, ``dtype``/``device`` at creation reaching every parameter, torchvision's FX feature extractor,
  ``save_for_hf`` and loading the folder back through timm's ``local-dir:`` source, ``torch.export``.
"""
import fnmatch
import inspect
import math
from contextlib import nullcontext

import pytest
import timm
import torch
from timm import create_model, get_pretrained_cfg_value
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import get_notrace_functions, get_notrace_modules

import tdam  # noqa: F401  (registers the models)
from tdam.models.factory import default_cfgs

try:
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names
    has_fx_feature_extraction = True
except ImportError:
    has_fx_feature_extraction = False

_HAS_DEVICE_CONTEXT = hasattr(torch.device, '__enter__')
torch_device = 'cpu'

MODEL_NAMES = sorted(default_cfgs)  # the 23 registered names
TD_NAMES = [n for n in MODEL_NAMES if n.startswith('td_')]


# The default tier runs TD on each architecture family and two of the baselines; the other names (the other
# baselines, the ResNet-34/50/101 variants of the same code) run in the slow tier (make test-slow), the whole file
# taking minutes on two CPU cores.
FAST = ('td_resnet18', 'td_convnext_tiny', 'td_mobilenetv3_large_100', 'se_resnet18', 'fca_resnet18')


def _params(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


ALL = _params(MODEL_NAMES)
EXCLUDE_FILTERS = []
TARGET_SIZE = 64
TARGET_FWD_SIZE = MAX_FWD_SIZE = TARGET_SIZE
TARGET_BWD_SIZE = TARGET_SIZE
MAX_BWD_SIZE = 320
MAX_FWD_OUT_SIZE = 448
TARGET_FFEAT_SIZE = TARGET_SIZE
MAX_FFEAT_SIZE = 256
TARGET_FWD_FX_SIZE = TARGET_SIZE
MAX_FWD_FX_SIZE = 256
TARGET_BWD_FX_SIZE = TARGET_SIZE
MAX_BWD_FX_SIZE = 224


def test_registered_names():
    assert len(MODEL_NAMES) == 23
    assert set(MODEL_NAMES) <= set(timm.list_models())


def _get_input_size(model=None, model_name='', target=None):
    if model is None:
        assert model_name, "One of model or model_name must be provided"
        input_size = get_pretrained_cfg_value(model_name, 'input_size')
        fixed_input_size = get_pretrained_cfg_value(model_name, 'fixed_input_size')
        min_input_size = get_pretrained_cfg_value(model_name, 'min_input_size')
    else:
        default_cfg = model.default_cfg
        input_size = default_cfg['input_size']
        fixed_input_size = default_cfg.get('fixed_input_size', None)
        min_input_size = default_cfg.get('min_input_size', None)
    assert input_size is not None

    if fixed_input_size:
        return input_size

    if min_input_size:
        if target and max(input_size) > target:
            input_size = min_input_size
    else:
        if target and max(input_size) > target:
            input_size = tuple([min(x, target) for x in input_size])
    return input_size


@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('batch_size', [1])
def test_model_forward(model_name, batch_size):
    """Run a single forward pass with each model"""
    model = create_model(model_name, pretrained=False)
    model.eval()

    input_size = _get_input_size(model=model, target=TARGET_FWD_SIZE)
    if max(input_size) > MAX_FWD_SIZE:
        pytest.skip("Fixed input size model > limit.")
    inputs = torch.randn((batch_size, *input_size))
    inputs = inputs.to(torch_device)
    model.to(torch_device)
    outputs = model(inputs)

    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), 'Output included NaNs'

    # Test that grad-checkpointing, if supported, doesn't cause model failures or change in output
    try:
        model.set_grad_checkpointing()
    except Exception:
        # throws if not supported, that's fine
        pass
    else:
        outputs2 = model(inputs)
        if isinstance(outputs, tuple):
            outputs2 = torch.cat(outputs2)
        assert torch.allclose(outputs, outputs2, rtol=1e-4, atol=1e-5), 'Output does not match'


@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('batch_size', [2])
def test_model_backward(model_name, batch_size):
    """Run a single forward pass with each model"""
    input_size = _get_input_size(model_name=model_name, target=TARGET_BWD_SIZE)
    if max(input_size) > MAX_BWD_SIZE:
        pytest.skip("Fixed input size model > limit.")

    model = create_model(model_name, pretrained=False, num_classes=42)
    encoder_only = model.num_classes == 0  # FIXME better approach?
    num_params = sum([x.numel() for x in model.parameters()])
    model.train()

    inputs = torch.randn((batch_size, *input_size))
    inputs = inputs.to(torch_device)
    model.to(torch_device)
    outputs = model(inputs)
    if isinstance(outputs, tuple):
        outputs = torch.cat(outputs)
    outputs.mean().backward()
    for n, x in model.named_parameters():
        assert x.grad is not None, f'No gradient for {n}'
    num_grad = sum([x.grad.numel() for x in model.parameters() if x.grad is not None])

    if encoder_only:
        feat_axis = getattr(model, 'feature_dim', None)
        if feat_axis is None:
            feat_axis = get_channel_dim(getattr(model, 'output_fmt', 'NCHW'))
        output_features = getattr(model, 'out_features', None) or model.num_features
        assert outputs.shape[feat_axis] == output_features, f'encoder output dim != {output_features}'
    else:
        assert outputs.shape[-1] == 42
    assert num_params == num_grad, 'Some parameters are missing gradients'
    assert not torch.isnan(outputs).any(), 'Output included NaNs'


# models with extra conv/linear layers after pooling (timm's list, restricted to the families tdam builds on)
EARLY_POOL_MODELS = (
    timm.models.MobileNetV3,
)


def _assert_model_api_contract(model, model_name, cfg_device):
    """Check parts of the model API the optimizer factory and model creation rely on, for every model."""
    from timm.models._manipulate import group_parameters

    # unknown constructor args must raise, not be silently ignored
    with torch.device(cfg_device) if _HAS_DEVICE_CONTEXT else nullcontext():
        with pytest.raises(TypeError):
            create_model(model_name, pretrained=False, device=cfg_device, not_a_model_arg=1)

    # reset_classifier keeps the current pooling by default
    if hasattr(model, 'reset_classifier'):
        param = inspect.signature(model.reset_classifier).parameters.get('global_pool')
        if param is not None:
            assert param.default is None, f'reset_classifier global_pool default is {param.default!r}, not None'

    # group_matcher() / no_weight_decay() must match the model's params
    param_names = [n for n, _ in model.named_parameters()]
    if hasattr(model, 'group_matcher'):
        groups = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
        assert len(set(groups.values())) > 1, 'group_matcher() puts all params in a single group'
    if hasattr(model, 'no_weight_decay'):
        for pattern in model.no_weight_decay():
            if any(fnmatch.fnmatch(n, pattern) for n in param_names):
                continue
            # an optional param (e.g. a class or register token) can be listed when this config doesn't use it
            obj = model
            for attr in pattern.split('.'):
                obj = getattr(obj, attr, None)
                if obj is None:
                    break
            assert obj is None, f'no_weight_decay() entry {pattern!r} matches no parameter'


def _assert_reset_classifier_preserves_parent_device_dtype(model):
    reset_classifier = getattr(model, 'reset_classifier', None)
    get_classifier = getattr(model, 'get_classifier', None)
    if not callable(reset_classifier) or not callable(get_classifier):
        return

    model.to(device='meta', dtype=torch.float64)
    expected = next(model.parameters())
    expected_training = model.training

    reset_classifier(0)
    reset_classifier(2)

    classifier = get_classifier()
    classifiers = classifier if isinstance(classifier, (tuple, list)) else (classifier,)
    parameters = [parameter for head in classifiers for parameter in head.parameters()]
    assert parameters
    assert all(parameter.device == expected.device for parameter in parameters)
    assert all(parameter.dtype == expected.dtype for parameter in parameters)
    assert all(module.training == expected_training for module in model.modules())


def _assert_frozen_survives_reset_and_resize(model_name, cfg_device, reset_pool=True):
    """reset_classifier(0, ...) and set_input_size() rebuild modules from existing weights, must keep them frozen."""
    model = create_model(model_name, pretrained=False, device=cfg_device, dtype=torch.float32)
    model.requires_grad_(False)
    reset_classifier = getattr(model, 'reset_classifier', None)
    if callable(reset_classifier):
        reset_classifier(0)
        if reset_pool and not isinstance(model, EARLY_POOL_MODELS):
            reset_classifier(0, '')
    set_input_size = getattr(model, 'set_input_size', None)
    if callable(set_input_size):
        set_input_size(img_size=tuple(2 * s for s in model.default_cfg['input_size'][-2:]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not trainable, f'frozen parameters became trainable: {trainable[:5]}'


def _assert_factory_device(model_name, cfg_device):
    """create_model(device=...) without a device context must place every param and buffer on that device."""
    model = create_model(model_name, pretrained=False, device=cfg_device, dtype=torch.float32)
    expected = torch.device(cfg_device)
    misplaced = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device != expected]
    assert not misplaced, f'tensors not created on {expected}: {misplaced[:5]}'


def _assert_dtype_change_after_forward(model, input_tensor, dtype=torch.bfloat16):
    """Converting dtype after a forward must not leave stale caches or upcast activations."""
    model.to(dtype)
    output = model(input_tensor.to(dtype))
    if isinstance(output, (tuple, list)):
        output = output[0]
    assert output.dtype == dtype, f'output dtype {output.dtype} != {dtype} after .to({dtype})'
    model.to(torch.float32)


@pytest.fixture
def cfg_device():
    # Config tests only inspect structure and shapes; retain real tensors on older torch.
    return 'meta' if _HAS_DEVICE_CONTEXT else torch_device


@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('batch_size', [1])
def test_model_default_cfgs(model_name, batch_size, cfg_device):
    """Check config metadata and feature/head shapes without allocating weights on modern torch."""
    with torch.device(cfg_device) if _HAS_DEVICE_CONTEXT else nullcontext():
        model = create_model(model_name, pretrained=False, device=cfg_device, dtype=torch.float32).eval()
    _assert_model_api_contract(model, model_name, cfg_device)
    assert getattr(model, 'num_classes') >= 0
    assert getattr(model, 'num_features') > 0
    assert getattr(model, 'head_hidden_size') > 0
    state_dict = model.state_dict()
    cfg = model.default_cfg
    assert model.in_chans == cfg['input_size'][0]

    pool_size = cfg['pool_size']
    input_size = model.default_cfg['input_size']
    output_fmt = getattr(model, 'output_fmt', 'NCHW')
    spatial_axis = get_spatial_dim(output_fmt)
    assert len(spatial_axis) == 2  # TODO add 1D sequence support
    feat_axis = get_channel_dim(output_fmt)

    if all([x <= MAX_FWD_OUT_SIZE for x in input_size]) and \
            not any([fnmatch.fnmatch(model_name, x) for x in EXCLUDE_FILTERS]):
        # output sizes only checked if default res <= 448 * 448 to keep resource down
        input_size = tuple([min(x, MAX_FWD_OUT_SIZE) for x in input_size])
        input_tensor = torch.randn((batch_size, *input_size), device=cfg_device)

        # test forward_features (always unpooled) & forward_head w/ pre_logits
        outputs = model.forward_features(input_tensor)
        outputs_pre = model.forward_head(outputs, pre_logits=True)
        assert outputs.shape[spatial_axis[0]] == pool_size[0], f'unpooled feature shape {outputs.shape} != config'
        assert outputs.shape[spatial_axis[1]] == pool_size[1], f'unpooled feature shape {outputs.shape} != config'
        assert outputs.shape[feat_axis] == model.num_features, \
            f'unpooled feature dim {outputs.shape[feat_axis]} != model.num_features {model.num_features}'
        assert outputs_pre.shape[1] == model.head_hidden_size, \
            f'pre_logits feature dim {outputs_pre.shape[1]} != model.head_hidden_size {model.head_hidden_size}'
        if _HAS_DEVICE_CONTEXT:
            _assert_dtype_change_after_forward(model, input_tensor)

        # test forward after deleting the classifier, output should be poooled, size(-1) == model.num_features
        model.reset_classifier(0)
        assert model.num_classes == 0, \
            f'Expected num_classes to be 0 after reset_classifier(0), but got {model.num_classes}'
        outputs = model.forward(input_tensor)
        assert len(outputs.shape) == 2
        assert outputs.shape[1] == model.head_hidden_size, \
            f'feature dim w/ removed classifier {outputs.shape[1]} != model.head_hidden_size {model.head_hidden_size}'
        assert outputs.shape == outputs_pre.shape, \
            f'output shape of pre_logits {outputs_pre.shape} does not match reset_head(0) {outputs.shape}'

        # test model forward after removing pooling and classifier
        if not isinstance(model, EARLY_POOL_MODELS):
            model.reset_classifier(0, '')  # reset classifier and disable global pooling
            outputs = model.forward(input_tensor)
            assert len(outputs.shape) == 4
            assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]

        # test classifier deletion via __init__, output should match reset_classifier(0)
        model = create_model(
            model_name, pretrained=False, num_classes=0, device=cfg_device, dtype=torch.float32,
        ).eval()
        outputs = model.forward(input_tensor)
        assert outputs.shape == outputs_pre.shape, \
            f'output shape w/ num_classes=0 {outputs.shape} != pre_logits {outputs_pre.shape}'
        assert outputs.shape[1] == model.head_hidden_size, \
            f'feature dim w/ num_classes=0 {outputs.shape[1]} != model.head_hidden_size {model.head_hidden_size}'

        # test classifier + global pool deletion via __init__
        if 'pruned' not in model_name and not isinstance(model, EARLY_POOL_MODELS):
            # Explicit factory kwargs must also work without the device context.
            model = create_model(
                model_name, pretrained=False, num_classes=0, global_pool='', device=cfg_device, dtype=torch.float32,
            ).eval()
            outputs = model.forward(input_tensor)
            assert len(outputs.shape) == 4
            assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]

    # check classifier name matches default_cfg
    if cfg.get('num_classes', None):
        classifier = cfg['classifier']
        if not isinstance(classifier, (tuple, list)):
            classifier = classifier,
        for c in classifier:
            assert c + ".weight" in state_dict.keys(), f'{c} not in model params'

    # check first conv(s) names match default_cfg
    first_conv = cfg['first_conv']
    if isinstance(first_conv, str):
        first_conv = (first_conv,)
    assert isinstance(first_conv, (tuple, list))
    for fc in first_conv:
        assert fc + ".weight" in state_dict.keys(), f'{fc} not in model params'

    _assert_reset_classifier_preserves_parent_device_dtype(model)
    if _HAS_DEVICE_CONTEXT:
        # extra model creations are only cheap on the meta device
        _assert_factory_device(model_name, cfg_device)
        _assert_frozen_survives_reset_and_resize(model_name, cfg_device)


# tdam addition: timm's test_model_forward_features runs the default feature class; both classes run here
@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('feature_cls', [None, 'hook'])
@pytest.mark.parametrize('batch_size', [1])
def test_model_forward_features(model_name, feature_cls, batch_size):
    """Run a single forward pass with each model in feature extraction mode"""
    kwargs = {} if feature_cls is None else dict(feature_cls=feature_cls)
    model = create_model(model_name, pretrained=False, features_only=True, **kwargs)
    model.eval()
    expected_channels = model.feature_info.channels()
    expected_reduction = model.feature_info.reduction()
    assert len(expected_channels) >= 3  # all models here should have at least 3 default feat levels

    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    if max(input_size) > MAX_FFEAT_SIZE:
        pytest.skip("Fixed input size model > limit.")
    output_fmt = getattr(model, 'output_fmt', 'NCHW')
    feat_axis = get_channel_dim(output_fmt)
    spatial_axis = get_spatial_dim(output_fmt)

    outputs = model(torch.randn((batch_size, *input_size)))
    assert len(expected_channels) == len(outputs)
    spatial_size = input_size[-2:]
    for e, r, o in zip(expected_channels, expected_reduction, outputs):
        assert e == o.shape[feat_axis]
        assert o.shape[spatial_axis[0]] <= math.ceil(spatial_size[0] / r) + 1
        assert o.shape[spatial_axis[1]] <= math.ceil(spatial_size[1] / r) + 1
        # catch feature_info reductions that are off by 2x or more
        assert o.shape[spatial_axis[0]] > spatial_size[0] / (2 * r), f'feature reduction {r} too small'
        assert o.shape[spatial_axis[1]] > spatial_size[1] / (2 * r), f'feature reduction {r} too small'
        assert o.shape[0] == batch_size
        assert not torch.isnan(o).any()


# timm's test runs convnext_atto / inception_next_atto; tdam runs every registered model with both feature classes,
# expecting what timm does for the same plain architecture (timm's MobileNetV3 takes output_stride only through its
# own features class, the default one, not through FeatureHookNet)
@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('feature_cls', [None, 'hook'])
@pytest.mark.parametrize('output_stride', [8, 16])
def test_model_features_output_stride(model_name, feature_cls, output_stride):
    """Dilated stages must keep feature maps at input size / feature_info reduction."""
    kwargs = {} if feature_cls is None else dict(feature_cls=feature_cls)
    plain = model_name.split('_', 1)[1]
    try:
        with torch.device('meta'):
            timm.create_model(plain, features_only=True, output_stride=output_stride, **kwargs)
    except TypeError:
        with pytest.raises(TypeError):
            create_model(model_name, pretrained=False, features_only=True, output_stride=output_stride, **kwargs)
        return
    model = create_model(model_name, pretrained=False, features_only=True, output_stride=output_stride, **kwargs)
    model.eval()
    outputs = model(torch.randn((1, 3, 64, 96)))
    assert max(model.feature_info.reduction()) == output_stride
    assert [tuple(o.shape[-2:]) for o in outputs] == [(64 // r, 96 // r) for r in model.feature_info.reduction()]


# tdam addition: out_indices select the levels; a TD/FCA stage after the last requested level is simply not built
@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('feature_cls', [None, 'hook'])
def test_model_features_out_indices(model_name, feature_cls):
    kwargs = {} if feature_cls is None else dict(feature_cls=feature_cls)
    model = create_model(model_name, pretrained=False, features_only=True, out_indices=(1, 2), **kwargs).eval()
    full = create_model(model_name, pretrained=False, features_only=True, **kwargs).eval()
    assert model.feature_info.reduction() == full.feature_info.reduction()[1:3]
    full.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs, reference = model(x), full(x)
    assert len(outputs) == 2
    for o, r in zip(outputs, reference[1:3]):
        torch.testing.assert_close(o, r)


@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('batch_size', [1])
def test_model_forward_intermediates_features(model_name, batch_size):
    """Run a single forward pass with each model in feature extraction mode"""
    model = create_model(model_name, pretrained=False, features_only=True, feature_cls='getter')
    model.eval()
    expected_channels = model.feature_info.channels()
    expected_reduction = model.feature_info.reduction()

    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    if max(input_size) > MAX_FFEAT_SIZE:
        pytest.skip("Fixed input size model > limit.")
    output_fmt = getattr(model, 'output_fmt', 'NCHW')
    feat_axis = get_channel_dim(output_fmt)
    spatial_axis = get_spatial_dim(output_fmt)

    outputs = model(torch.randn((batch_size, *input_size)))
    assert len(expected_channels) == len(outputs)
    spatial_size = input_size[-2:]
    for e, r, o in zip(expected_channels, expected_reduction, outputs):
        assert e == o.shape[feat_axis]
        assert o.shape[spatial_axis[0]] <= math.ceil(spatial_size[0] / r) + 1
        assert o.shape[spatial_axis[1]] <= math.ceil(spatial_size[1] / r) + 1
        assert o.shape[0] == batch_size
        assert not torch.isnan(o).any()


@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('batch_size', [1])
def test_model_forward_intermediates(model_name, batch_size):
    """Run a single forward pass with each model in feature extraction mode"""
    model = create_model(model_name, pretrained=False)
    model.eval()
    feature_info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    expected_channels = feature_info.channels()
    expected_reduction = feature_info.reduction()
    assert len(expected_channels) >= 3  # all models here should have at least 3 feature levels

    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    if max(input_size) > MAX_FFEAT_SIZE:
        pytest.skip("Fixed input size model > limit.")
    output_fmt = 'NCHW'  # NOTE output_fmt determined by forward_intermediates() arg, not model attribute
    feat_axis = get_channel_dim(output_fmt)
    spatial_axis = get_spatial_dim(output_fmt)

    inpt = torch.randn((batch_size, *input_size))
    output, intermediates = model.forward_intermediates(
        inpt,
        output_fmt=output_fmt,
    )
    assert len(expected_channels) == len(intermediates)
    spatial_size = input_size[-2:]
    for e, r, o in zip(expected_channels, expected_reduction, intermediates):
        assert e == o.shape[feat_axis]
        assert o.shape[spatial_axis[0]] <= math.ceil(spatial_size[0] / r) + 1
        assert o.shape[spatial_axis[1]] <= math.ceil(spatial_size[1] / r) + 1
        assert o.shape[0] == batch_size
        assert not torch.isnan(o).any()

    output2 = model.forward_features(inpt)
    torch.testing.assert_close(output, output2, rtol=1e-5, atol=1e-8)

    # Test that grad-checkpointing, if supported
    try:
        model.set_grad_checkpointing()
    except Exception:
        # throws if not supported, that's fine
        pass
    else:
        output3, _ = model.forward_intermediates(
            inpt,
            output_fmt=output_fmt,
        )
        torch.testing.assert_close(output, output3, rtol=1e-4, atol=1e-5)


def _create_fx_model(model, train=False):
    # This block of code does a bit of juggling to handle any case where there are multiple outputs in train mode
    # So we trace once and look at the graph, and get the indices of the nodes that lead into the original fx output
    # node. Then we use those indices to select from train_nodes returned by torchvision get_graph_node_names
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(),
        autowrap_functions=get_notrace_functions(),
        # enable_cpatching=True,
        param_shapes_constant=True
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)

    eval_return_nodes = [eval_nodes[-1]]
    train_return_nodes = [train_nodes[-1]]
    if train:
        tracer = NodePathTracer(**tracer_kwargs)
        graph = tracer.trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        output_node_indices = [-graph_node_names.index(node_name) for node_name in output_node_names]
        train_return_nodes = [train_nodes[ix] for ix in output_node_indices]

    fx_model = create_feature_extractor(
        model,
        train_return_nodes=train_return_nodes,
        eval_return_nodes=eval_return_nodes,
        tracer_kwargs=tracer_kwargs,
    )
    return fx_model


@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('batch_size', [1])
def test_model_forward_fx(model_name, batch_size):
    """
    Symbolically trace each model and run single forward pass through the resulting GraphModule
    Also check that the output of a forward pass through the GraphModule is the same as that from the original Module
    """
    if not has_fx_feature_extraction:
        pytest.skip("Can't test FX. Torch >= 1.10 and Torchvision >= 0.11 are required.")

    model = create_model(model_name, pretrained=False)
    model.eval()

    input_size = _get_input_size(model=model, target=TARGET_FWD_FX_SIZE)
    if max(input_size) > MAX_FWD_FX_SIZE:
        pytest.skip("Fixed input size model > limit.")
    with torch.inference_mode():
        inputs = torch.randn((batch_size, *input_size))
        outputs = model(inputs)
        if isinstance(outputs, tuple):
            outputs = torch.cat(outputs)

        model = _create_fx_model(model)
        fx_outputs = tuple(model(inputs).values())
        if isinstance(fx_outputs, tuple):
            fx_outputs = torch.cat(fx_outputs)

    torch.testing.assert_close(fx_outputs, outputs, rtol=1e-4, atol=1e-5)
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), 'Output included NaNs'


@pytest.mark.parametrize('model_name', ALL)
@pytest.mark.parametrize('batch_size', [2])
def test_model_backward_fx(model_name, batch_size):
    """Symbolically trace each model and run single backward pass through the resulting GraphModule"""
    if not has_fx_feature_extraction:
        pytest.skip("Can't test FX. Torch >= 1.10 and Torchvision >= 0.11 are required.")

    input_size = _get_input_size(model_name=model_name, target=TARGET_BWD_FX_SIZE)
    if max(input_size) > MAX_BWD_FX_SIZE:
        pytest.skip("Fixed input size model > limit.")

    model = create_model(model_name, pretrained=False, num_classes=42)
    encoder_only = model.num_classes == 0
    feat_axis = getattr(model, 'feature_dim', None) if encoder_only else -1
    if feat_axis is None:
        feat_axis = get_channel_dim(getattr(model, 'output_fmt', 'NCHW'))
    output_features = (getattr(model, 'out_features', None) or model.num_features) if encoder_only else 42
    model.train()
    num_params = sum([x.numel() for x in model.parameters()])

    model = _create_fx_model(model, train=True)
    outputs = tuple(model(torch.randn((batch_size, *input_size))).values())
    if isinstance(outputs, tuple):
        outputs = torch.cat(outputs)
    outputs.mean().backward()
    for n, x in model.named_parameters():
        assert x.grad is not None, f'No gradient for {n}'
    num_grad = sum([x.grad.numel() for x in model.parameters() if x.grad is not None])

    assert outputs.shape[feat_axis] == output_features
    assert num_params == num_grad, 'Some parameters are missing gradients'
    assert not torch.isnan(outputs).any(), 'Output included NaNs'


# ------------------------------------------------------------------------------------------ tdam additions (issues)

@pytest.mark.parametrize('model_name', ALL)
def test_dtype_and_device_reach_every_parameter(model_name):
    model = create_model(model_name, dtype=torch.float64).eval()
    wrong = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
             if t.is_floating_point() and t.dtype != torch.float64]
    assert not wrong, f'not float64: {wrong[:5]}'
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64
    model = create_model(model_name, device='meta')
    misplaced = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != 'meta']
    assert not misplaced, f'not on meta: {misplaced[:5]}'


@pytest.mark.parametrize('model_name', ALL)
def test_torchvision_feature_extractor(model_name):
    """torchvision's create_feature_extractor without timm's tracer settings (plain FX tracing)."""
    model = create_model(model_name).eval()
    _, nodes = get_graph_node_names(model)
    fx = create_feature_extractor(model, return_nodes={nodes[-1]: 'logits'})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fx(x)['logits'], model(x))
    fx2 = timm.models.create_feature_extractor(model, return_nodes={nodes[-1]: 'logits'})
    with torch.no_grad():
        torch.testing.assert_close(fx2(x)['logits'], model(x))


@pytest.mark.parametrize('model_name', ALL)
def test_save_for_hf_and_local_dir_load(model_name, tmp_path):
    pytest.importorskip('huggingface_hub')
    kwargs = dict(t=3, num_classes=10) if model_name.startswith('td_') else dict(num_classes=10)
    model = create_model(model_name, **kwargs).eval()
    cfg = model.pretrained_cfg
    assert cfg['architecture'] == model_name and cfg['tag'] == 'untrained'
    assert cfg['test_input_size'] == (3, 224, 224) and cfg['first_conv'] and cfg['classifier']
    timm.models.save_for_hf(model, tmp_path)
    loaded = create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    assert type(loaded) is type(model) and loaded.pretrained_cfg['architecture'] == model_name
    # save_for_hf also records timm's current in_chans / global_pool; everything create_model was given comes back
    assert {k: loaded.model_config[k] for k in model.model_config} == model.model_config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_pretrained_without_local_source_is_refused():
    with pytest.raises(ValueError, match='never downloads'):
        create_model('td_resnet18', pretrained=True)


@pytest.mark.parametrize('model_name', ['td_resnet18', 'td_convnext_tiny'])
def test_features_only_keeps_td_and_steps_stay_on_classifiers(model_name):
    clf = create_model(model_name).eval()
    assert len(clf.forward_steps(torch.randn(1, 3, 64, 64))) == 2
    feats = create_model(model_name, features_only=True)
    assert any(isinstance(m, tdam.models.TDBlock) for m in feats.modules())
    assert not hasattr(feats, 'forward_steps')
    if model_name.startswith('td_resnet'):  # same parameter names: the classifier's weights load into its features
        feats.load_state_dict({k: v for k, v in clf.state_dict().items() if not k.startswith('fc.')})


def test_torch_export_td_model():
    model = create_model('td_resnet18').eval()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))
