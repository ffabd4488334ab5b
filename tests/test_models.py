"""Model builders: sizes against the spec and the paper, the step protocol, errors, gradients, timm registry."""
import math
import re

import pytest
import timm
import torch

import tdam
from tdam.complexity import count_params, flops
from tdam.reference import paper_table

# ------------------------------------------------------------------------------------------------ exact sizes (spec)


@pytest.mark.parametrize("arch,kwargs,expected", [
    ("resnet18", dict(td_mode="top", t=2, m=2), 11_767_336),
    ("resnet50", dict(td_mode="joint", t=2, m=1), 27_645_992),
    ("resnet101", dict(td_mode="joint", t=2, m=1), 46_754_856),
])
def test_exact_td_parameter_counts(arch, kwargs, expected):
    assert count_params(tdam.create_model(arch, attention="td", **kwargs)) == expected


@pytest.mark.parametrize("arch,expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                           ("resnet50", 25_557_032), ("resnet101", 44_549_160)])
def test_plain_parameter_counts(arch, expected):
    assert count_params(tdam.create_model(arch)) == expected


def _td_kwargs(row) -> dict:
    kw = dict(attention="td", td_mode=row.td_mode, t=int(row.t), m=int(row.m))
    kw["td_stages"] = tuple(int(s) for s in str(row.td_stages).split("+"))
    return kw


def _table_rows():
    """Plain and TD ResNet rows of Table 1 and the R50 'layers' rows of Table 2, minus the known-inconsistent row."""
    t1 = paper_table(1)
    for row in t1.itertuples():
        if not row.backbone.startswith("resnet") or (isinstance(row.attention, str) and row.attention != "td"):
            continue
        if row.backbone == "resnet50" and row.method == "TDtop(t=2;m=3)":
            continue  # reference/README.md: the published m=3 row does not match the public m=3 block
        kw = _td_kwargs(row) if row.attention == "td" else {}
        yield pytest.param(row.backbone, kw, row.params_M, row.gflops, id=f"T1-{row.backbone}-{row.method}")
    t2 = paper_table(2)
    for row in t2[t2.set == "layers"].itertuples():
        if row.attention == "td":
            kw = _td_kwargs(row)
        elif row.td_stages == "all":
            kw = dict(attention="se")
        else:
            kw = dict(attention="se", attn_stages=tuple(int(s) for s in row.td_stages.split("+")))
        yield pytest.param(row.backbone, kw, row.params_M, row.gflops, id=f"T2-{row.row}")


@pytest.mark.parametrize("arch,kwargs,params_m,gflops", list(_table_rows()))
def test_paper_sizes(arch, kwargs, params_m, gflops):
    model = tdam.create_model(arch, **kwargs)
    assert abs(count_params(model) / 1e6 - params_m) <= 0.015
    if kwargs.get("attention") == "se":   # the paper counts SE's global pooling (+0.0055 G on R50), tdam's x.mean not
        assert abs(flops(model, 224) / 1e9 - gflops) <= 0.01
    else:                                 # plain and TD rows: the printed value exactly
        assert f"{flops(model, 224) / 1e9:.2f}" == f"{gflops:.2f}"


# ------------------------------------------------------------------------------------------------ the step protocol

@pytest.mark.parametrize("arch,kwargs", [
    ("resnet18", dict(t=3, m=1)),
    ("resnet50", dict(t=2, m=2, td_mode="top")),
    ("resnet18", dict(t=3, m=1, td_stages=(3,))),  # the last TD stage is layer3; layer4 runs after it per step
    ("convnext_tiny", dict(t=2, m=1)),
    ("mobilenetv3_large_100", dict(t=3, m=1)),
])
def test_forward_steps_equals_full_runs_and_computes_early_stages_once(arch, kwargs):
    torch.manual_seed(0)
    model = tdam.create_model(arch, attention="td", num_classes=7, **kwargs).eval()
    x = torch.randn(2, 3, 64, 64)
    stages = model.stage_list()
    last = model.last_td_stage
    calls = {"stem": 0, "before": 0, "last": 0}
    first_layer = next(model.children())  # conv1 / stem / conv_stem
    hooks = [first_layer.register_forward_hook(lambda *a: calls.__setitem__("stem", calls["stem"] + 1)),
             stages[last - 2].register_forward_hook(lambda *a: calls.__setitem__("before", calls["before"] + 1)),
             stages[last - 1].register_forward_hook(lambda *a: calls.__setitem__("last", calls["last"] + 1))]
    with torch.no_grad():
        steps = model.forward_steps(x)
    assert calls == {"stem": 1, "before": 1, "last": kwargs["t"]}
    for h in hooks:
        h.remove()
    assert len(steps) == kwargs["t"] == model.td_steps
    with torch.no_grad():
        for k, logits in enumerate(steps, 1):
            with model.steps(k):
                torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(steps[-1], model(x), rtol=1e-4, atol=1e-5)
        feats = model.forward_steps(x, features=True)
        torch.testing.assert_close(feats[-1][0], model.forward_features(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(steps[0], steps[-1])


def test_steps_context_manager_restores_on_error():
    model = tdam.create_model("resnet18", attention="td", t=3, num_classes=5)
    with pytest.raises(RuntimeError, match="boom"):
        with model.steps(1):
            assert model.td_steps == 1
            raise RuntimeError("boom")
    assert model.td_steps == 3 and all(b.t == 3 for b in model.td_blocks(3))
    with pytest.raises(ValueError, match="1..3"):
        with model.steps(4):
            pass


def test_plain_model_has_one_step():
    model = tdam.create_model("resnet18", num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        (logits,) = model.forward_steps(x)
        torch.testing.assert_close(logits, model(x))
    assert model.td_steps == 1


# ------------------------------------------------------------------------------------------------ invalid configurations

@pytest.mark.parametrize("args,kwargs,needle", [
    (("resnet18",), dict(attention="td", m=3), "0, 1, 2"),
    (("resnet50",), dict(attention="td", t=0), ">= 1"),
    (("resnet50",), dict(attention="td", m=1, td_feedback="identity"), "'attention', 'conv'"),
    (("resnet50",), dict(attention="td", m=2, td_feedback="conv"), "spatial size"),
    (("resnet51",), dict(), "'resnet18', 'resnet34', 'resnet50', 'resnet101', 'convnext_tiny'"),
    (("resnet50",), dict(attention="sk"), "'td', 'se', 'cbam', 'eca', 'fca'"),
    (("convnext_tiny",), dict(attention="se"), "None, 'td', 'fca'"),
    (("resnet50",), dict(attention="td", td_mode="bilinear"), "'top', 'joint', 'additive'"),
    (("resnet50",), dict(attention="td", td_order="sp_chn"), "'channel_spatial', 'spatial_channel'"),
    (("convnext_tiny",), dict(attention="td", m=0), "1, 2"),
    (("mobilenetv3_large_100",), dict(attention="td", m=2), "1"),
    (("resnet50",), dict(attention="td", td_stages=(5,)), "1..4"),
    (("resnet101",), dict(attention="td", td_blocks={3: (0, 23)}), "0..22"),
    (("resnet50",), dict(t=2), "attention='td'"),
    (("resnet50",), dict(pretrained=True), "never downloads"),
    (("resnet18",), dict(foo=1), "'foo'"),
    (("resnet18",), dict(foo=1), "valid model options are ['arch', 'attention', 'num_classes', 't', 'm'"),
])
def test_invalid_configurations(args, kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        tdam.create_model(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ gradients (DDP)

VARIANTS = [
    ("resnet18", dict(m=0, td_mode="top")), ("resnet18", dict(m=1)), ("resnet18", dict(m=2, td_mode="additive")),
    ("resnet50", dict(m=0)), ("resnet50", dict(m=1)), ("resnet50", dict(m=2, td_mode="top")), ("resnet50", dict(m=3)),
    ("resnet50", dict(m=1, td_feedback="conv")), ("resnet50", dict(m=1, td_pool="avg+max", td_order="parallel")),
    ("resnet50", dict(m=1, td_order="spatial_channel", t=3)),
    ("convnext_tiny", dict(m=1)), ("convnext_tiny", dict(m=2, td_feedback="identity")),
    ("mobilenetv3_large_100", dict(m=1)), ("mobilenetv3_large_100", dict(m=1, td_keep_se=True)),
    ("resnet101", dict(m=1)),
]


@pytest.mark.parametrize("arch,kwargs", VARIANTS, ids=[f"{a}-{'-'.join(f'{k}{v}' for k, v in kw.items())}"
                                                       for a, kw in VARIANTS])
def test_every_parameter_gets_a_gradient(arch, kwargs):
    torch.manual_seed(0)
    model = tdam.create_model(arch, attention="td", num_classes=4, **kwargs).train()
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ timm integration

def test_timm_registry_and_tooling():
    model = timm.create_model("td_resnet50", t=2, m=1, num_classes=10)
    assert count_params(model) == count_params(tdam.create_model("resnet50", attention="td", num_classes=10))
    assert model.model_config == dict(arch="resnet50", attention="td", num_classes=10, t=2, m=1)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["input_size"] == (3, 224, 224) and math.isclose(cfg["crop_pct"], 0.875)
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert {"td_resnet18", "td_convnext_tiny", "td_mobilenetv3_large_100", "se_resnet50",
            "fca_convnext_tiny"} <= set(timm.list_models("*"))


def test_model_config_rebuilds_the_model():
    model = tdam.create_model("resnet101", attention="td", td_stages=(4,), num_classes=3)
    again = tdam.create_model(**model.model_config)
    assert count_params(again) == count_params(model) and again.model_config == model.model_config


def test_channels_last_matches():
    torch.manual_seed(0)
    model = tdam.create_model("resnet50", attention="td", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_model_spec_and_check_model():
    """The model description: flat parameters -> create_model's keyword arguments; validated by a meta build."""
    from tdam.models import check_model, model_spec

    assert model_spec("resnet50", "td", t=3, m=None, td_stages=(3, 4)) == {
        "arch": "resnet50", "attention": "td", "t": 3, "td_stages": [3, 4]}
    assert model_spec("resnet18", "plain") == {"arch": "resnet18", "attention": None}
    assert model_spec(None, None, t=2) == {"t": 2}               # None: keep what a params file says
    check_model({"arch": "mobilenetv3_large_100", "attention": "td", "td_stages": [4, 5, 6]})
    with pytest.raises(ValueError, match=r"TD options \['t'\] given, but attention='se'"):
        check_model({"arch": "resnet18", "attention": "se", "t": 5})
    with pytest.raises(ValueError, match="'arch' is missing"):
        check_model({"attention": "td"})
    with pytest.raises(ValueError, match="expected a mapping"):
        check_model("resnet18")
