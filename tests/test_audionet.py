"""AudioNet shapes and the waveform augmentations (train/audionet.py, train/augment.py)."""
import dataclasses
import json

import pytest
import torch

from edge.frontend import sound_level_db
from train.audionet import VARIANTS, AudioNet, AudioNetConfig, build_parser
from train.augment import (AddNoise, BetweenClass, Mixup, PitchShift, RandomApply, RandomCrop, RandomGain,
                           SpeedChange, TimeShift, build_augment, build_mix)
from train.runs import plan_runs


def configure(argv: list) -> AudioNetConfig:
    """The configuration `python -m train.audionet ARGV` trains with."""
    return AudioNetConfig.from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize("depth", sorted(VARIANTS))
def test_logits_for_a_batch_of_5_s_clips_at_8_khz(depth):
    model = AudioNet(n_classes=50, depth=depth, sample_rate=8000).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 40000)).shape == (3, 50)


def test_m5_is_the_books_layer_stack_with_50_outputs():
    model = AudioNet(depth=5, sample_rate=8000, pooling="mean")
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == \
        [(128, 80, 4), (128, 3, 1), (256, 3, 1), (512, 3, 1)]
    assert sum(isinstance(m, torch.nn.MaxPool1d) for m in model.features) == 4
    assert model.classifier.out_features == 50


def test_any_clip_length_works_and_logits_are_not_log_probabilities():
    model = AudioNet(n_classes=10, depth=11).eval()
    with torch.no_grad():
        for samples in (8000, 40000, 64000):
            logits = model(torch.randn(2, 1, samples))
            assert logits.shape == (2, 10)
    assert not torch.allclose(logits.exp().sum(1), torch.ones(2))  # no log_softmax inside


def test_unknown_depth_is_refused():
    with pytest.raises(ValueError, match="depth"):
        AudioNet(depth=7)


def test_resume_takes_the_saved_settings_and_refuses_a_run_saved_by_another_version(tmp_path):
    run = tmp_path / "audionet-book-seed0"
    run.mkdir()
    saved = {**configure(["--pooling", "mean", "--mix", "none"]).to_json(), "split": "book", "seed": 0}
    (run / "config.json").write_text(json.dumps(saved))
    asked = configure(["--resume", str(run), "--pooling", "mean+max", "--device", "cpu"])
    config = asked.resumed()
    [planned] = plan_runs(config, "audionet")
    assert planned.resume and planned.run_dir == run
    assert (config.pooling, config.mix, config.device, config.resume) == ("mean", "none", "cpu", str(run))
    assert asked.pooling == "mean+max"  # the configuration built from the command line is not edited
    del saved["mix"]  # as written before --mix existed
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="saved by another version of this code .no mix"):
        configure(["--resume", str(run)]).resumed()


def test_the_configuration_is_frozen_and_refuses_bad_settings():
    config = configure([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 1
    for bad in ({"crop_seconds": -1.0}, {"augment_p": 1.5}, {"depth": 7}, {"sample_rate": 22050}, {"mix": "cutmix"}):
        with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
            AudioNetConfig(**bad)


def test_mean_plus_max_pooling_sums_both_summaries_of_the_last_feature_map():
    torch.manual_seed(0)
    model = AudioNet(n_classes=10, depth=11, pooling="mean+max").eval()
    x = torch.randn(2, 1, 40000)
    with torch.no_grad():
        features = model.features(x)
        expected = model.classifier(features.mean(-1) + features.amax(-1))
        assert torch.allclose(model(x), expected)
        assert not torch.allclose(model(x), model.classifier(features.mean(-1)))
    with pytest.raises(ValueError, match="pooling"):
        AudioNet(pooling="attention")


def test_the_network_hears_the_shape_of_a_recording_not_its_level():
    def first_layer_inputs(model, *waves):
        seen = []
        hook = model.features[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        with torch.no_grad():
            for wave in waves:
                model(wave)
        hook.remove()
        return seen

    x = torch.randn(2, 1, 16000) * 0.5
    quiet = x * 10 ** (-30 / 20)
    loud, soft = first_layer_inputs(AudioNet(n_classes=10, normalize_peak=True).eval(), x, quiet)
    assert torch.allclose(loud, soft, atol=1e-6)  # 30 dB quieter: the network sees the same input
    assert torch.allclose(loud.abs().amax(-1), torch.full((2, 1), 10 ** (-6 / 20)))  # at a -6 dBFS peak
    loud, soft = first_layer_inputs(AudioNet(n_classes=10).eval(), x, quiet)
    assert torch.allclose(soft, quiet) and torch.allclose(loud, x)  # the recipe: the recording's own level
    [silent] = first_layer_inputs(AudioNet(n_classes=10, normalize_peak=True).eval(), torch.zeros(1, 1, 16000))
    assert torch.equal(silent, torch.zeros(1, 1, 16000))  # digital silence: no division by zero
    assert configure(["--normalize-peak"]).normalize_peak and not configure([]).normalize_peak


def test_at_16_khz_the_first_layer_keeps_its_span_in_time_and_the_rest_sees_the_same_frames():
    slow, fast = AudioNet(depth=11, sample_rate=8000).eval(), AudioNet(depth=11, sample_rate=16000).eval()
    first = fast.features[0]
    assert (first.kernel_size[0], first.stride[0]) == (160, 8)  # 10 ms, hop 0.5 ms, as conv(80, 4) at 8 kHz
    with torch.no_grad():
        assert slow.features(torch.randn(1, 1, 40000)).shape == fast.features(torch.randn(1, 1, 80000)).shape
    assert [p.shape for p in slow.parameters()][1:] == [p.shape for p in fast.parameters()][1:]


def test_sample_rates_that_are_not_multiples_of_8_khz_are_refused(capsys):
    with pytest.raises(ValueError, match="sample_rate"):
        AudioNet(sample_rate=22050)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--sample-rate", "22050"])
    assert "--sample-rate: must be a multiple of 8000 Hz, not '22050'" in capsys.readouterr().err
    config = configure(["--sample-rate", "8000"])
    assert config.sample_rate == 8000
    assert repr(build_mix(config, config.sample_rate)) == "BetweenClass(sample_rate=8000)"
    defaults, model = configure([]), AudioNet()
    assert defaults.sample_rate == model.sample_rate == 16000 and defaults.ema == 0.999  # the reported recipe
    assert (defaults.depth, defaults.pooling) == (model.depth, model.pooling) == (11, "mean+max")
    assert defaults.normalize_peak == model.normalize_peak is False


@pytest.mark.parametrize("augment", [RandomGain(), TimeShift(), SpeedChange(), AddNoise(), PitchShift(8000, 2)])
def test_each_augmentation_keeps_the_shape_and_is_reproducible(augment):
    wave = torch.sin(torch.linspace(0, 2000, 8000))[None] * 0.5
    torch.manual_seed(3)
    first = augment(wave.clone())
    torch.manual_seed(3)
    again = augment(wave.clone())
    assert first.shape == wave.shape and torch.equal(first, again)


def test_gain_noise_and_speed_change_the_signal_as_described():
    wave = torch.sin(torch.linspace(0, 2000, 8000))[None] * 0.5
    torch.manual_seed(0)
    gained = RandomGain(max_db=6)(wave)
    ratio = (gained.abs().max() / wave.abs().max()).item()
    assert 10 ** (-6 / 20) - 1e-6 <= ratio <= 10 ** (6 / 20) + 1e-6
    noisy = AddNoise(20, 20)(wave)
    snr = 10 * torch.log10(wave.pow(2).mean() / (noisy - wave).pow(2).mean())
    assert abs(snr.item() - 20) < 1.0
    assert torch.equal(TimeShift(0.0)(wave), wave)
    tone = torch.sin(2 * torch.pi * 200 * torch.arange(8000) / 8000)[None]  # 200 Hz for 1 s at 8 kHz
    ratios = []
    for seed in range(8):
        torch.manual_seed(seed)
        played = SpeedChange(0.1)(tone)
        assert played.shape == tone.shape
        ratios.append(float(torch.fft.rfft(played[0]).abs().argmax()) / 200)  # bins are 1 Hz apart
    assert all(0.9 - 0.01 <= r <= 1.1 + 0.01 for r in ratios) and len(set(ratios)) >= 5  # pitch moves with tempo


def test_shift_without_wrap_brings_in_silence_and_loses_the_far_end():
    wave = torch.arange(1, 101, dtype=torch.float32)[None]
    shifts = set()
    for seed in range(20):
        torch.manual_seed(seed)
        rolled = TimeShift(0.3)(wave)
        torch.manual_seed(seed)
        shifted = TimeShift(0.3, wrap=False)(wave)
        shift = int((rolled[0] == 1).nonzero())  # where the first sample went (rolled by shift mod 100)
        shift = shift if shift <= 30 else shift - 100
        shifts.add(shift)
        if shift >= 0:  # later: zeros first, the last `shift` samples gone
            assert torch.equal(shifted[0, :shift], torch.zeros(shift))
            assert torch.equal(shifted[0, shift:], wave[0, :100 - shift])
        else:  # earlier: the first samples gone, zeros last
            assert torch.equal(shifted[0, :100 + shift], wave[0, -shift:]) and not shifted[0, 100 + shift:].any()
    assert min(shifts) < 0 < max(shifts) and max(map(abs, shifts)) <= 30
    assert configure([]).shift_wrap and not configure(["--no-shift-wrap"]).shift_wrap
    random_part, _ = build_augment(configure(["--no-shift-wrap"]), 8000).transforms
    assert not random_part.transforms[1].wrap


def test_cli_switches_turn_augmentations_off():
    random_part, crop = build_augment(configure([]), 8000).transforms
    assert [type(t).__name__ for t in random_part.transforms] == ["RandomGain", "TimeShift", "SpeedChange"]
    assert crop.samples == 20000
    config = configure(["--no-gain", "--no-speed", "--pitch", "2", "--noise", "--crop-seconds", "0"])
    assert [type(t).__name__ for t in build_augment(config, 8000).transforms] == ["TimeShift", "PitchShift", "AddNoise"]
    assert build_augment(AudioNetConfig(no_gain=True, no_shift=True, no_speed=True, crop_seconds=0.0), 8000) is None


def test_random_crop_finds_the_sound_in_a_silent_clip():
    wave = torch.zeros(1, 40000)
    wave[0, 30000:31000] = 1.0  # a 1/8-s event in 5 s of silence
    crop = RandomCrop(8000)
    torch.manual_seed(0)
    windows = [crop(wave) for _ in range(50)]
    assert all(w.shape == (1, 8000) for w in windows)
    assert all(w.abs().max() == 1.0 for w in windows)
    assert crop(torch.ones(1, 100)).shape == (1, 8000)
    assert crop(torch.zeros(1, 40000)).shape == (1, 8000)


def test_random_apply_probability():
    calls = []
    apply = RandomApply([lambda w: calls.append(1) or w], p=0.25)
    torch.manual_seed(0)
    for _ in range(2000):
        apply(torch.zeros(1, 4))
    assert abs(len(calls) / 2000 - 0.25) < 0.04


def tone(freq: float, seconds: float = 2.5, rate: int = 8000, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return torch.sin(2 * torch.pi * freq * t + phase)[None]


def test_sound_level_follows_amplitude_and_a_weighting():
    levels = sound_level_db(torch.stack([tone(1000), 2 * tone(1000), tone(100), torch.zeros(1, 20000)]).numpy(), 8000)
    assert levels[1] - levels[0] == pytest.approx(6.02, abs=0.05)
    assert levels[2] - levels[0] == pytest.approx(-19.1, abs=0.3)  # A-weighting at 100 Hz
    assert levels[3] == pytest.approx(-80.0)


def test_between_class_mixes_at_the_perceived_ratio_and_labels_by_it():
    quiet, loud = 0.1 * tone(1000), tone(1000, phase=torch.pi / 2)  # same frequency, orthogonal, 20 dB apart
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, partner, ratio = BetweenClass(8000)(torch.stack([quiet, loud]))
        if partner.tolist() == [1, 0]:
            break
    own = (mixed[0] * tone(1000)).sum() / (tone(1000) ** 2).sum()
    other = (mixed[0] * tone(1000, phase=torch.pi / 2)).sum() / (tone(1000) ** 2).sum()
    assert own / (own + other) == pytest.approx(ratio[0].item(), abs=1e-3)  # not 0.1 * r: levels are evened
    assert mixed.shape == (2, 1, 20000) and 0 <= ratio.min() and ratio.max() < 1


def test_between_class_is_the_default_mix_and_mixup_the_alternative(capsys):
    assert isinstance(build_mix(configure([]), 16000), BetweenClass)
    assert repr(build_mix(configure(["--mix", "mixup"]), 16000)) == "Mixup(alpha=0.2)"
    assert repr(build_mix(configure(["--mix", "mixup", "--mixup-alpha", "0.4"]), 16000)) == "Mixup(alpha=0.4)"
    assert build_mix(configure(["--mix", "none"]), 16000) is None
    with pytest.raises(SystemExit):
        configure(["--mix", "cutmix"])
    assert "--mix" in capsys.readouterr().err


def test_mixup_uses_one_ratio_per_batch():
    x = torch.randn(6, 1, 100)
    torch.manual_seed(0)
    mixed, partner, share = Mixup(0.4)(x)
    assert torch.allclose(mixed, share[0] * x + (1 - share[0]) * x[partner]) and share.unique().numel() == 1
    with pytest.raises(ValueError, match="alpha"):
        Mixup(0.0)
