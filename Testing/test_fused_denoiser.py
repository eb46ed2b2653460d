"""The fused sampling forward computes what ImmunoDiffModel.predict_noise computes, with the
additions really fused into oneDNN convolutions, and leaves the model as it found it."""

from dataclasses import replace

import pytest
import torch
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch.utils._python_dispatch import TorchDispatchMode

from ImmunoDiffLib.clinical import encode_clinical, parse_clinical
from ImmunoDiffLib.inference.fused_denoiser import FusedDenoiser
from ImmunoDiffLib.inference.sampling import SamplingOptions, sample
from ImmunoDiffLib.models import TINY, ImmunoDiffModel
from ImmunoDiffLib.models.batch import model_batch

SHAPE = (1, 16, 16, 8)
LAST = torch.channels_last_3d


@pytest.fixture(scope="module")
def model_and_conditions():
    torch.manual_seed(0)
    model = ImmunoDiffModel(replace(TINY, use_flash_attention=True)).eval()
    with torch.no_grad():  # MONAI zero-initialises the output and zero convolutions
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model = model.to(memory_format=LAST)
    clinical = encode_clinical([parse_clinical({"age": 64, "pdl1": 40, "anc": 5.1})])
    generator = torch.Generator().manual_seed(1)
    baseline = torch.rand((1, *SHAPE), generator=generator) * 2 - 1
    vessels = torch.rand((1, *SHAPE), generator=generator) > 0.8
    lobes = torch.randint(0, 6, (1, *SHAPE), generator=generator)
    tumour = torch.rand((1, *SHAPE), generator=generator) > 0.9
    batch = model_batch(baseline, lobes, vessels, clinical, tumour=tumour)
    with torch.inference_mode():
        conditions = model.encode_conditions(batch, "2")
    return model, conditions


def _inputs(timesteps):
    x = torch.randn((len(timesteps), *SHAPE), generator=torch.Generator().manual_seed(2))
    return x.contiguous(memory_format=LAST), torch.tensor(timesteps)


def _batch_of(conditions, n):
    return (conditions.context.repeat_interleave(n, 0),
            conditions.control.repeat_interleave(n, 0).contiguous(memory_format=LAST))


@pytest.mark.parametrize("timesteps", [[37], [37, 37], [5, 80]])
def test_fused_forward_equals_the_monai_forward_in_fp32(model_and_conditions, timesteps):
    model, conditions = model_and_conditions
    x, t = _inputs(timesteps)
    context, control = _batch_of(conditions, len(timesteps))
    with torch.inference_mode():
        expected = model.predict_noise(x, t, type(conditions)(context, control))
        denoiser = FusedDenoiser(model, context, control)
        fused = denoiser(x, t)
    assert expected.abs().mean() > 0.05  # a non-trivial output to compare
    assert fused.shape == expected.shape
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)
    if torch.backends.mkldnn.is_available():
        # 3 ResNet skips + 6 ControlNet residuals + its input, per network and level
        assert denoiser.fused_additions >= 10


def test_fused_forward_in_bf16_stays_close_to_the_monai_forward(model_and_conditions):
    model, conditions = model_and_conditions
    x, t = _inputs([60, 60])
    context, control = _batch_of(conditions, 2)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.predict_noise(x, t, type(conditions)(context, control)).float()
        fused = FusedDenoiser(model, context, control)(x, t).float()
    relative = (fused - expected).norm() / expected.norm()
    assert relative < 0.03, relative


def test_the_model_is_left_unchanged_even_when_a_step_fails(model_and_conditions):
    model, conditions = model_and_conditions
    before = {k: v.clone() for k, v in model.state_dict().items()}
    context, control = _batch_of(conditions, 1)
    denoiser = FusedDenoiser(model, context, control)
    with torch.inference_mode(), pytest.raises(RuntimeError):
        denoiser(torch.randn(1, 3, *SHAPE[1:]), torch.tensor([10]))  # 3 channels, not 1
    blocks = [m for m in model.modules() if isinstance(m, DiffusionUNetResnetBlock)]
    assert blocks and all("forward" not in vars(block) for block in blocks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fused_sampling_matches_the_plain_loop_and_repeats_with_the_seed(model_and_conditions):
    model, conditions = model_and_conditions
    options = SamplingOptions(steps=4, samples=2, seed=5, bf16=False)
    plain = sample(model, conditions, SHAPE, replace(options, fused=False))
    fused = sample(model, conditions, SHAPE, options)
    again = sample(model, conditions, SHAPE, options)
    assert torch.equal(fused, again)
    torch.testing.assert_close(fused, plain, rtol=1e-3, atol=1e-4)
    assert (fused[0] - fused[1]).abs().mean() > 0.01  # two different draws


def test_class_conditioned_networks_are_refused(model_and_conditions):
    model, conditions = model_and_conditions
    model.unet.num_class_embeds = 3
    try:
        with pytest.raises(ValueError, match="class-conditioned"):
            FusedDenoiser(model, *_batch_of(conditions, 1))
    finally:
        model.unet.num_class_embeds = None


def test_a_onednn_without_the_fusion_falls_back_to_plain_additions(model_and_conditions,
                                                                   monkeypatch):
    model, conditions = model_and_conditions
    x, t = _inputs([37])
    context, control = _batch_of(conditions, 1)

    def unsupported(*args):
        raise RuntimeError("Binary Fusion behavior undefined.")

    monkeypatch.setattr(FusedDenoiser, "convolution_with_addition", staticmethod(unsupported))
    with torch.inference_mode():
        expected = model.predict_noise(x, t, type(conditions)(context, control))
        denoiser = FusedDenoiser(model, context, control)
        fused = denoiser(x, t)
    assert denoiser.fused_additions == 0 and not denoiser.fusion_works
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)


def test_fused_up_block_features_equal_the_plain_ones(model_and_conditions):
    model, conditions = model_and_conditions
    x, t = _inputs([20, 20, 20])
    draws = type(conditions)(*_batch_of(conditions, 3))
    with torch.inference_mode():
        plain = model.up_block_features(x, t, draws)
        fused = model.up_block_features(x, t, draws, fused=True)
    assert fused.shape == plain.shape == (3, 16 + 16 + 8)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)


def test_the_fused_forward_refuses_autograd(model_and_conditions):
    model, conditions = model_and_conditions
    x, t = _inputs([37])
    with torch.inference_mode():
        denoiser = FusedDenoiser(model, *_batch_of(conditions, 1))
    with pytest.raises(RuntimeError, match="for inference"):
        denoiser(x, t)


class _LayoutSpy(TorchDispatchMode):
    """Records the layout of every multi-channel full-resolution tensor that an addition,
    concatenation or convolution receives."""

    def __init__(self, full_resolution):
        super().__init__()
        self.full_resolution, self.layouts = tuple(full_resolution), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__
        if name.startswith(("add", "cat", "convolution", "mkldnn_convolution",
                            "_convolution_pointwise")):
            flat = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
            self.layouts += [(name, t.is_contiguous(memory_format=LAST))
                             for t in flat if torch.is_tensor(t) and t.dim() == 5
                             and t.shape[1] > 1 and tuple(t.shape[2:]) == self.full_resolution]
        return func(*args, **(kwargs or {}))


@pytest.fixture
def two_threads():
    """At least two torch threads, as the product runs on two cores: with one thread aten
    runs the 1x1x1 convolutions of a small batch in its own kernel rather than oneDNN's, and
    answers channels-first whatever it is given (the suite's parallel workers take one each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    yield
    torch.set_num_threads(threads)


def test_fused_forward_keeps_a_channels_last_network_channels_last(two_threads):
    """The one-channel input is ambiguous: without care the U-Net's input convolution hands
    channels-first activations to the channels-last network (each addition then transposes).
    Checked at full resolution, 32 channels: smaller convolutions run in aten's own kernel,
    which answers channels-first whatever it is given."""
    torch.manual_seed(0)
    config = replace(TINY, channels=(32, 32, 32), num_head_channels=(0, 0, 32),
                     use_flash_attention=True)
    model = ImmunoDiffModel(config).eval().to(memory_format=LAST)
    shape = (1, 1, 32, 32, 8)
    batch = {"baseline": torch.rand(shape) * 2 - 1, "vessels": torch.zeros(shape),
             "lobes": torch.ones(shape)}
    with torch.inference_mode():
        conditions = model.encode_conditions(batch, "1C")
        control = conditions.control.contiguous(memory_format=LAST)
        denoiser = FusedDenoiser(model, conditions.context, control)
        spy = _LayoutSpy(full_resolution=shape[2:])
        with spy:
            denoiser(torch.randn(shape).contiguous(memory_format=LAST), torch.tensor([37]))
    assert len(spy.layouts) > 10  # the spy saw the network's additions and convolutions
    assert [name for name, channels_last in spy.layouts if not channels_last] == []
