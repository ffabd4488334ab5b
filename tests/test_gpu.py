"""GPU paths: bf16 autocast + channels_last, torch.compile, and a short trainer run on CUDA.

Skipped, with the reason in the test summary, on machines without a CUDA device (CI runs without one).
"""
import pytest
import torch

import tdam

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU test: no CUDA device on this machine")]


def _models():
    torch.manual_seed(0)
    return {"plain": tdam.create_model("resnet50", num_classes=10),
            "td": tdam.create_model("resnet50", attention="td", t=2, m=1, num_classes=10)}


@pytest.mark.parametrize("name", ["plain", "td"])
def test_bf16_channels_last_matches_fp32(name):
    model = _models()[name].cuda().eval()
    x = torch.randn(8, 3, 128, 128, device="cuda")
    with torch.no_grad():
        ref = model(x).float()
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x.to(memory_format=torch.channels_last)).float()
    assert torch.allclose(out, ref, rtol=0.1, atol=0.1 * ref.abs().max().item())


def test_compiled_td_model_matches_eager_and_trains():
    model = _models()["td"].cuda()
    x, y = torch.randn(4, 3, 128, 128, device="cuda"), torch.randint(0, 10, (4,), device="cuda")
    compiled = torch.compile(model)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-3, atol=1e-3)
    model.train()
    loss = torch.nn.functional.cross_entropy(compiled(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_forward_steps_on_gpu():
    model = _models()["td"].cuda().eval()
    x = torch.randn(2, 3, 128, 128, device="cuda")
    with torch.no_grad():
        steps = model.forward_steps(x)
        torch.testing.assert_close(steps[-1], model(x), rtol=1e-3, atol=1e-3)


def test_trainer_bf16_on_gpu(tmp_path):
    import tdam.train

    cfg = tdam.train.load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "td"}, epochs=1,
                                 steps_per_epoch=5, device="cuda", amp="bf16", output_dir=str(tmp_path / "run"))
    result = tdam.train.train(cfg)
    assert result.checkpoint.exists()
    assert torch.isfinite(torch.tensor(result.final["train_loss"]))
