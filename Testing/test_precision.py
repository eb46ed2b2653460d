"""The denoising steps' precision and layout: bf16 only where the device multiplies it in
hardware, channels-last on the CPU (on a GPU with bf16), decided from capabilities (never
timings), so the same machine and seed give the same output."""

import pytest
import torch

from ImmunoDiffLib.cli import build_parser
from ImmunoDiffLib.inference import precision
from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
from ImmunoDiffLib.inference.precision import describe, native_bf16, resolve_channels_last
from ImmunoDiffLib.inference.sampling import SamplingOptions, sample
from ImmunoDiffLib.models import TINY, ImmunoDiffModel


def _cpu_reports(monkeypatch, amx: bool, avx512_bf16: bool):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, True), (False, True, True), (True, True, True), (False, False, False)])
def test_cpu_bf16_is_native_only_with_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16,
                                                         expected):
    _cpu_reports(monkeypatch, amx, avx512_bf16)
    assert native_bf16("cpu") is expected
    options = SamplingOptions().for_device("cpu")
    assert options.bf16 is expected and options.channels_last is True


def test_a_torch_without_the_capability_checks_means_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert native_bf16("cpu") is False


def test_cuda_without_a_gpu_and_other_devices_are_not_native_bf16():
    if not torch.cuda.is_available():
        assert native_bf16("cuda") is False
    assert native_bf16("meta") is False


def test_explicit_choices_are_kept_whatever_the_hardware(monkeypatch):
    _cpu_reports(monkeypatch, amx=False, avx512_bf16=False)
    forced = SamplingOptions(bf16=True).for_device("cpu")
    assert forced.bf16 is True and forced.channels_last is True
    mixed = SamplingOptions(bf16=True, channels_last=False).for_device("cpu")
    assert mixed.bf16 is True and mixed.channels_last is False
    assert describe(mixed.bf16, mixed.channels_last) == "bf16, channels-first"
    _cpu_reports(monkeypatch, amx=True, avx512_bf16=True)
    plain = SamplingOptions(bf16=False).for_device("cpu")
    assert plain.bf16 is False and plain.channels_last is True
    assert describe(plain.bf16, plain.channels_last) == "fp32, channels-last"


@pytest.mark.parametrize("bf16, expected", [(False, False), (True, True)])
def test_on_a_gpu_the_layout_follows_bf16(bf16, expected):
    assert resolve_channels_last(None, bf16, "cuda") is expected
    assert resolve_channels_last(not expected, bf16, "cuda") is (not expected)


def test_automatic_precision_samples_exactly_as_the_choice_it_makes():
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY).eval()
    with torch.no_grad():
        for parameter in model.unet.out.parameters():
            parameter.normal_(0, 0.05)
    batch = {"baseline": torch.rand(1, 1, 16, 16, 8) * 2 - 1,
             "vessels": torch.zeros(1, 1, 16, 16, 8), "lobes": torch.ones(1, 1, 16, 16, 8)}
    with torch.inference_mode():
        conditions = model.encode_conditions(batch, "1C")
    chosen = SamplingOptions(steps=3, samples=2).for_device("cpu")
    automatic = sample(model, conditions, (1, 16, 16, 8), SamplingOptions(steps=3, samples=2))
    explicit = sample(model, conditions, (1, 16, 16, 8), chosen)
    other = sample(model, conditions, (1, 16, 16, 8),
                   SamplingOptions(steps=3, samples=2, bf16=not chosen.bf16))
    assert torch.equal(automatic, explicit)
    assert not torch.equal(automatic, other)  # the precision really is what changed


@pytest.mark.parametrize("requested, expected", [(None, True), (False, False), (True, True)])
def test_pipeline_puts_the_model_in_the_layout_its_steps_use(requested, expected):
    pipeline = ImmunoDiffPipeline(model=ImmunoDiffModel(TINY), channels_last=requested)
    weight = next(m.weight for m in pipeline.model.unet.modules()
                  if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last_3d) is expected
    options = pipeline._options_for_this_model(SamplingOptions())
    assert options.channels_last is expected and options.bf16 is native_bf16("cpu")
    explicit = pipeline._options_for_this_model(SamplingOptions(channels_last=not expected))
    assert explicit.channels_last is (not expected)


@pytest.mark.parametrize("flag, expected", [([], None), (["--precision", "fp32"], False),
                                            (["--precision", "bf16"], True)])
def test_command_line_precision(flag, expected):
    args = build_parser().parse_args(["predict", "--cohort", "c.csv", "-o", "out", *flag])
    assert precision.PRECISIONS[args.precision] is expected


def test_command_line_refuses_an_unknown_precision(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--cohort", "c.csv", "-o", "out",
                                   "--precision", "fp16"])
    assert "--precision" in capsys.readouterr().err
