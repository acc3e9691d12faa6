"""MelCNN (train/melcnn.py): shapes, the crop that finds the sound, the recipe's defaults, export parity."""
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import export.to_onnx as to_onnx
from edge.classifier import Classifier
from edge.frontend import a_weighting_db, mel_band_edges_hz
from edge.metadata import LOG_MEL_IMAGE
from train import crop_averaging, precise_bn, weight_average
from train.augment import (BetweenClassMel, FreqMixStyle, MelSpeedChange, RecordingConditions, TimeCutMix, TimeShift,
                           build_mix)
from train.crop_averaging import crop_average
from train.melcnn import (FRONTEND, WIDTHS, MelCNN, MelCNNConfig, RandomTimeCrop, ResidualPair, SubSpectralNorm,
                          build_augment, build_parser, melcnn_frontend, widths_arg)
from train.models import build_model
from train.specaugment import FrequencyMask, TimeMask

CLASSES = ["low_tone", "high_tone"]
REPO = Path(__file__).resolve().parents[1]
REPORTED_RUN = "melcnn-dbpcen-book-seed0-20261203-052806"  # the run behind the README's MelCNN row
DB_FRONTEND = melcnn_frontend(compression="db")  # the recipe's dB channel alone, for tests of the dB image


def configure(argv: list) -> MelCNNConfig:
    """The configuration `python -m train.melcnn ARGV` trains with."""
    return MelCNNConfig.from_args(build_parser().parse_args(argv))


def test_the_front_end_gives_a_db_and_a_pcen_channel_of_64_bands_per_5_s_window():
    assert FRONTEND.image_shape == (2, 64, 216) and FRONTEND.layers == ("db", "pcen")
    wave = np.random.default_rng(0).standard_normal(44100 * 5).astype(np.float32)
    image = FRONTEND(wave, 44100)
    assert image.shape == (2, 64, 216) and image.dtype == np.float32
    assert np.array_equal(image[:1], DB_FRONTEND(wave, 44100))


def test_the_full_band_front_end_keeps_the_image_and_hears_above_11_khz():
    """At 44.1 kHz the same 64 x 216 image (same network cost) reaches 22 kHz: a 16 kHz tone lands in the top
    bands there, and is cut off by the 22.05 kHz front end's resampling."""
    full = melcnn_frontend(44100)
    assert full.image_shape == FRONTEND.image_shape and full.fmax == 22050
    t = np.arange(5 * 44100) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 16000 * t)).astype(np.float32)
    assert full.log_mel(tone, 44100).mean(axis=1).argmax() >= 56
    power_full = full.mel_power(full.clip(tone, 44100)).sum()
    power_half = FRONTEND.mel_power(FRONTEND.clip(tone, 44100)).sum()
    assert power_half < 1e-5 * power_full  # what is left of it after resampling to 22.05 kHz: below -50 dB
    with pytest.raises(ValueError, match="--sample-rate"):
        melcnn_frontend(16000)


def test_128_bands_resolve_tones_that_64_bands_put_side_by_side():
    """128 bands with the window doubled and the hop kept: a 128 x 216 image with a band between tones 60 Hz
    apart, which 64 bands put in neighbouring bands."""
    fine = melcnn_frontend(mel_bands=128)
    assert fine.image_shape == (2, 128, 216)
    assert (fine.n_fft, fine.hop_length) == (2 * FRONTEND.n_fft, FRONTEND.hop_length)
    t = np.arange(5 * 22050) / 22050

    def peak_band(frontend, hz):
        return int(frontend.log_mel(np.sin(2 * np.pi * hz * t).astype(np.float32), 22050).mean(axis=1).argmax())

    assert peak_band(FRONTEND, 560) - peak_band(FRONTEND, 500) == 1
    assert peak_band(fine, 560) - peak_band(fine, 500) >= 2
    with pytest.raises(ValueError, match="--mel-bands"):
        melcnn_frontend(mel_bands=96)


def test_half_the_hop_follows_events_too_fast_for_the_recipes_hop():
    """--hop-length 256 keeps the window and halves the hop: a 64 x 431 image. Clicks 25 times a second show as a
    25-Hz rhythm in its frames; the recipe's 43 frames a second cannot hold it (it aliases to 18 Hz)."""
    fine = melcnn_frontend(hop_length=256)
    assert fine.image_shape == (2, 64, 431) and fine.n_fft == FRONTEND.n_fft and fine.hop_length == 256
    rate, wave = 22050, np.zeros(5 * 22050, np.float32)
    for start in np.arange(0.5, 4.5, 0.04):
        wave[int(start * rate):int(start * rate) + 32] = 1.0

    def rhythm_hz(frontend):
        loudness = frontend.log_mel(wave, rate).mean(axis=0)
        steady = loudness[int(0.6 * rate / frontend.hop_length):int(4.4 * rate / frontend.hop_length)]
        spectrum = np.abs(np.fft.rfft(steady - steady.mean()))
        return np.fft.rfftfreq(len(steady), frontend.hop_length / rate)[spectrum.argmax()]

    assert abs(rhythm_hz(fine) - 25) < 0.5 and abs(rhythm_hz(FRONTEND) - 25) > 5
    with pytest.raises(ValueError, match="--hop-length"):
        melcnn_frontend(hop_length=128)


@pytest.mark.parametrize("frames", [108, 216, 301])
def test_logits_for_crops_and_whole_windows_of_any_length(frames):
    model = MelCNN(n_classes=50).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 2, 64, frames))
    assert logits.shape == (3, 50)


def test_defaults_are_the_recipe():
    """`MelCNN()` is the network the CLI trains by default, and the registry rebuilds it by name."""
    config = configure([])
    model = MelCNN()
    assert config == MelCNNConfig(data=config.data)
    assert config.widths == WIDTHS and config.pooling == model.pooling == "mean+max"
    assert config.dropout == model.dropout.p
    assert [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)][1::2] == list(WIDTHS)
    assert isinstance(build_model("melcnn", widths=[4, 8]), MelCNN)


def test_the_cli_defaults_are_the_settings_of_the_reported_run():
    """The README's MelCNN numbers come from this run; `python -m train.melcnn` must train it again."""
    saved = json.loads((REPO / "results" / REPORTED_RUN / "config.json").read_text())
    defaults = configure([])
    host_only = ("data", "out", "no_progress", "seeds", "resume", "device", "precision", "workers", "cache_dir")
    # settings added after that run, at the values that do what it did
    added_since = {"frequency_position": False, "consistency": 0.0, "freq_mixstyle": 0.0, "teacher_views": "crop",
                   "teacher_temperature": 1.0, "residual": False, "sub_bands": 1, "device_copies": 0,
                   "hop_length": 512, "stem_pool": 2}
    reported = MelCNNConfig.from_saved({**added_since, **saved})  # also refuses a saved file with other fields
    with pytest.raises(ValueError, match=r"unknown retired_flag\); resume it with the version it was started with "
                                         r"\(commit 0123abc\)"):
        MelCNNConfig.from_saved({**added_since, **saved, "retired_flag": 1, "commit": "0123abc"})
    assert dataclasses.replace(reported, **{k: getattr(defaults, k) for k in host_only}) == defaults


def test_mean_plus_max_pooling_adds_the_loudest_frame_to_the_average():
    """A short event in one frame moves the mean+max summary more than the mean summary."""
    torch.manual_seed(0)
    mean_model = MelCNN(n_classes=2, widths=(4,), pooling="mean", dropout=0.0).eval()
    both = MelCNN(n_classes=2, widths=(4,), pooling="mean+max", dropout=0.0).eval()
    both.load_state_dict(mean_model.state_dict())
    x = torch.randn(1, 2, 8, 64)
    with torch.no_grad():
        features = mean_model.features(x).mean(dim=2)
        expected = mean_model.classifier(features.mean(-1) + features.amax(-1))
        assert torch.allclose(both(x), expected, atol=1e-6)
        assert not torch.allclose(mean_model(x), expected, atol=1e-3)


def test_attention_pooling_weighs_the_frames_between_their_mean_and_their_loudest():
    """With flat frame scores the attention term is the mean over time; with scores that grow steeply with each
    channel's own value it becomes that channel's loudest frame (what mean+max adds)."""
    torch.manual_seed(0)
    attention = MelCNN(n_classes=2, widths=(4,), pooling="mean+attention", dropout=0.0).eval()
    x = torch.randn(1, 2, 8, 64)
    with torch.no_grad():
        features = attention.features(x).mean(dim=2)
        for weight, summary in ((0.0, features.mean(-1)), (1e4, features.amax(-1))):
            attention.frame_scores.weight.copy_(weight * torch.eye(4).unsqueeze(-1))
            attention.frame_scores.bias.zero_()
            expected = attention.classifier(features.mean(-1) + summary)
            assert torch.allclose(attention(x), expected, atol=1e-4)
    assert attention(torch.randn(3, 2, 64, 37)).shape == (3, 2)  # any number of frames
    assert MelCNN(widths=(4,), pooling="mean+max").frame_scores is None


def test_frequency_position_is_a_channel_from_the_lowest_band_to_the_highest():
    """The first convolution sees the image and, after it, -1 at the lowest band rising to 1 at the highest, the same
    in every frame and every clip of the batch."""
    model = MelCNN(n_classes=3, widths=(4,), frequency_position=True).eval()
    seen = []
    model.features[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.randn(2, FRONTEND.channels, 64, 30)
    with torch.no_grad():
        model(x)
    (inputs,) = seen
    assert inputs.shape == (2, FRONTEND.channels + 1, 64, 30) and torch.equal(inputs[:, :-1], x)
    assert torch.allclose(inputs[:, -1], torch.linspace(-1, 1, 64).view(1, 64, 1).expand(2, 64, 30))
    assert configure(["--frequency-position"]).frequency_position and not configure([]).frequency_position


def test_residual_stages_add_a_shortcut_around_their_two_convolutions():
    """With the last BatchNorm of each pair scaled to zero, a residual stage passes on only its shortcut: the input
    itself where the width stays, a 1x1 convolution where it changes."""
    model = MelCNN(n_classes=3, widths=(4, 4, 8), residual=True).eval()
    pairs = [m for m in model.features if isinstance(m, ResidualPair)]
    assert len(pairs) == 3 and [type(p.shortcut).__name__ for p in pairs] == ["Sequential", "Identity", "Sequential"]
    with torch.no_grad():
        for pair in pairs:
            pair.body[-1].weight.zero_()
            pair.body[-1].bias.zero_()
        x = torch.randn(2, 4, 16, 20)
        assert torch.equal(pairs[1](x), torch.relu(x))
        assert torch.allclose(pairs[2](x), torch.relu(pairs[2].shortcut(x)))
    assert model(torch.randn(2, FRONTEND.channels, 64, 37)).shape == (2, 3)
    plain = MelCNN(n_classes=3, widths=(4, 4, 8))
    assert not any(isinstance(m, ResidualPair) for m in plain.features)
    assert configure(["--residual"]).residual and not configure([]).residual


def test_sub_spectral_norm_normalises_each_group_of_bins_on_its_own():
    """In training mode each (channel, group of bins) comes out with zero mean and unit spread over the batch, although
    the groups went in at very different scales; BatchNorm over all bins leaves the low groups small."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 10) * torch.logspace(0, 3, 16).view(1, 1, 16, 1) + 5
    out = SubSpectralNorm(3, 4).train()(x)
    groups = out.reshape(8, 3, 4, 4, 10).transpose(1, 2).reshape(8, 4, 3, -1)  # (batch, group, channel, values)
    assert torch.allclose(groups.mean(dim=(0, 3)), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(groups.var(dim=(0, 3), unbiased=False), torch.ones(4, 3), atol=1e-3)
    plain = torch.nn.BatchNorm2d(3).train()(x)
    assert plain[:, :, :4].std() < 0.1 < out[:, :, :4].std()
    model = MelCNN(n_classes=3, widths=(4, 8), sub_bands=4)
    assert sum(isinstance(m, SubSpectralNorm) for m in model.features) == 4
    assert model(torch.randn(2, FRONTEND.channels, 64, 37)).shape == (2, 3)
    assert configure(["--sub-bands", "4"]).sub_bands == 4 and configure([]).sub_bands == 1
    for flags in (["--sub-bands", "0"], ["--sub-bands", "3"], ["--sub-bands", "16"],
                  ["--sub-bands", "2", "--residual"]):
        with pytest.raises(ValueError, match="--sub-bands"):
            configure(flags)
    with pytest.raises(ValueError, match="--widths: 8 stages"):  # too many stages is the widths', not sub-bands'
        configure(["--widths", "4,4,4,4,4,4,4,4"])


@pytest.mark.parametrize("flags, message", [
    (["--widths", "4,4,4,4,4,4,4"], "--widths: 7 stages"),  # 64 bands reach one bin before the last pooling
    (["--crop-seconds", "0.1"], "--crop-seconds 0.1 gives 4 frames"),  # four stages pool 16 frames into one
    (["--freq-mask", "0"], "--freq-mask"), (["--time-mask", "0"], "--time-mask")])
def test_settings_the_network_or_the_masks_cannot_use_are_refused_before_a_run_starts(flags, message):
    with pytest.raises(ValueError, match=message):
        configure(flags)
    configure(["--widths", "4,4,4,4,4,4"])  # six stages leave one bin and 3 of a crop's 108 frames


def test_a_stem_pool_of_4_gives_a_128_band_image_the_64_band_networks_later_shapes():
    """The first stage sees 128 bands; from its pooling on, every shape is the recipe's on 64 bands."""
    fine, recipe = MelCNN(n_classes=3, widths=(4, 8), stem_pool=4), MelCNN(n_classes=3, widths=(4, 8))
    first_stage = slice(0, 7)  # two (conv, BatchNorm, ReLU) and the pooling
    assert fine.features[0](torch.zeros(1, 2, 128, 216)).shape[2] == 128
    assert (fine.features[first_stage](torch.zeros(1, 2, 128, 216)).shape
            == recipe.features[first_stage](torch.zeros(1, 2, 64, 216)).shape == (1, 4, 32, 108))
    assert fine(torch.randn(2, 2, 128, 108)).shape == (2, 3)
    assert configure(["--mel-bands", "128", "--stem-pool", "4"]).stem_pool == 4 and configure([]).stem_pool == 2
    with pytest.raises(ValueError, match="--widths: 7 stages"):
        configure(["--stem-pool", "4", "--widths", "4,4,4,4,4,4,4"])  # 64 bands: 7 stages leave less than a bin
    assert configure(["--stem-pool", "4", "--widths", "4", "--sub-bands", "64"]).sub_bands == 64  # pools after it


@pytest.mark.parametrize("kwargs", [{"pooling": "median"}, {"widths": ()}, {"widths": (8, 0)}, {"stem_pool": 3}])
def test_bad_model_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        MelCNN(**kwargs)


@pytest.mark.parametrize("text", ["", "8,x", "8,0", "-4"])
def test_bad_widths_on_the_command_line_exit_with_usage(text, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--widths", text])
    assert "--widths" in capsys.readouterr().err
    assert widths_arg("8,16") == (8, 16)


@pytest.mark.parametrize("compression", ["db", "pcen", "db+pcen"])
def test_random_time_crop_always_holds_the_sound(compression):
    """A 10-frame event in 216 frames of near-silence: every 108-frame crop contains all of it or part of it."""
    image = torch.full((1, 64, 216), -2.0)
    image[0, 20:30, 150:160] = 2.0
    crop = RandomTimeCrop(108, melcnn_frontend(compression=compression))
    for seed in range(50):
        torch.manual_seed(seed)
        out = crop(image)
        assert out.shape == (1, 64, 108) and out.max() == 2.0
    starts = set()
    for seed in range(200):
        torch.manual_seed(seed)
        out = crop(image)
        starts.add(int(torch.nonzero(out[0, 25] == 2.0)[0]))
    assert len(starts) > 20  # the event lands at many places in the crop, not one


def test_random_time_crop_pads_short_images_with_their_floor():
    image = torch.zeros(1, 4, 50)
    image[..., 10] = -1.0
    out = RandomTimeCrop(108, FRONTEND)(image)
    assert out.shape == (1, 4, 108) and torch.equal(out[..., 50:], torch.full((1, 4, 58), -1.0))


def test_augmentation_is_speed_shift_crop_then_the_books_masks_and_each_can_be_switched_off():
    default = build_augment(configure([]), FRONTEND)
    crop, masks = default.transforms
    assert isinstance(crop, RandomTimeCrop) and crop.frames == 108  # 2.5 s at 22050 Hz, hop 512
    assert [type(t.transforms[0]) for t in masks.transforms] == [FrequencyMask, TimeMask]
    assert build_augment(configure(["--crop-seconds", "0", "--no-specaugment"]), FRONTEND) is None
    assert isinstance(build_augment(configure(["--no-specaugment"]), FRONTEND), RandomTimeCrop)
    with pytest.raises(ValueError, match="--crop-seconds"):
        configure(["--crop-seconds", "-1"])
    with pytest.raises(ValueError, match="--conditions must be between 0 and 1, not 1.5"):
        configure(["--conditions", "1.5"])
    with pytest.raises(ValueError, match="--specaugment-p"):
        configure(["--specaugment-p", "-0.1"])
    with pytest.raises(ValueError, match="--room-drr-db must be LOW,HIGH with LOW <= HIGH"):
        configure(["--room-drr-db", "10,-15"])
    with pytest.raises(ValueError, match="--background-clips .* needs --conditions > 0"):
        configure(["--background-clips", "--conditions", "0"])
    assert configure(["--room-drr-db=-15,10", "--background-clips"]).room_drr_db == (-15.0, 10.0)
    with pytest.raises(ValueError, match="--room-copies must be >= 0, not -1"):
        configure(["--room-copies", "-1"])
    with pytest.raises(ValueError, match="--room-copies .* needs --conditions > 0"):
        configure(["--room-copies", "4", "--conditions", "0"])
    with pytest.raises(ValueError, match="--device-copies .* needs --conditions > 0"):
        configure(["--device-copies", "2", "--conditions", "0"])
    with pytest.raises(ValueError, match="--babble must be >= 0, not -2"):
        configure(["--babble", "-2"])
    with pytest.raises(ValueError, match="--babble .* needs --conditions > 0"):
        configure(["--babble", "64", "--conditions", "0"])
    with pytest.raises(ValueError, match="--noise-clips must be >= 0, not -1"):
        configure(["--noise-clips", "-1"])
    with pytest.raises(ValueError, match="--noise-clips .* needs --conditions > 0"):
        configure(["--noise-clips", "64", "--conditions", "0"])
    with pytest.raises(ValueError, match="--room-bank must be >= 1, not 0"):
        configure(["--room-bank", "0"])
    with pytest.raises(ValueError, match="--speed must be >= 1, not 0.8"):
        configure(["--speed", "0.8"])
    speed, crop, masks = build_augment(configure(["--speed", "1.25"]), FRONTEND).transforms
    assert isinstance(speed, MelSpeedChange) and speed.max_speed == 1.25 and isinstance(crop, RandomTimeCrop)
    speed, shift, crop, masks = build_augment(configure(["--speed", "1.25", "--shift"]), FRONTEND).transforms
    assert isinstance(shift, TimeShift) and shift.max_fraction == 0.5 and isinstance(crop, RandomTimeCrop)


def test_the_shift_lets_a_crop_hold_what_the_clip_ends_with_before_its_onset():
    """A sound at the very start of its clip (as ESC-50's usually are) never follows anything in a plain
    crop; rolled, it follows the clip's own end, as it follows room tone in a listener's window."""
    db = np.full((DB_FRONTEND.n_mels, 216), -DB_FRONTEND.top_db, np.float32)
    db[10:20, :40] = 0.0  # a 40-frame sound in bands 10-19 at the clip's start, silence after it
    image = torch.from_numpy(DB_FRONTEND.image(db))
    chain = build_augment(configure(["--shift", "--no-specaugment", "--compression", "db"]), DB_FRONTEND)
    torch.manual_seed(0)
    onsets = []
    for _ in range(200):
        crop = chain(image)
        loud = (crop[0, 10] == image.max()).nonzero().flatten()
        assert crop.shape == (1, 64, 108) and len(loud) > 0  # still a crop that holds the sound
        assert torch.equal(crop[0, :, loud[0]], image[0, :, 0])  # time moves, bands do not
        onsets.append(int(loud[0]))
    assert max(onsets) >= 60 and sum(o > 0 for o in onsets) > 50  # the sound often starts late in the crop
    assert configure(["--no-shift"]).shift is False


def band_image(band: int, frames: int = 40) -> torch.Tensor:
    """A (1, 64, frames) image of one mel band at the image's maximum over a floor 80 dB below it."""
    db = np.full((FRONTEND.n_mels, frames), -FRONTEND.top_db, np.float32)
    db[band] = 0.0
    return torch.from_numpy(FRONTEND.image(db))


def test_a_speed_change_moves_a_tone_up_in_pitch_and_its_onset_earlier():
    """A tone at 2 kHz from frame 100 to 140, played 1.25 times as fast, is at 2.5 kHz from frame 80 to 112."""
    centres = mel_band_edges_hz(FRONTEND.n_mels, FRONTEND.fmin, FRONTEND.fmax)[1:-1]
    image = torch.full((1, 64, 216), -2.0)
    image[0, int(np.argmin(abs(centres - 2000))), 100:140] = 2.0
    speed_change = MelSpeedChange(FRONTEND, max_speed=1.25)
    for speed, pitch_hz, onset, offset in ((1.25, 2500, 80, 112), (0.8, 1600, 125, 175)):
        out = speed_change.play(image, speed)
        assert out.shape == image.shape and out.min() == -2.0
        loud_band = int(out[0].amax(dim=1).argmax())
        assert abs(centres[loud_band] - pitch_hz) < (centres[loud_band + 1] - centres[loud_band - 1]) / 2
        loud = torch.nonzero(out[0, loud_band] > 0).flatten()
        assert abs(int(loud[0]) - onset) <= 1 and abs(int(loud[-1]) - offset) <= 1
    assert torch.allclose(speed_change.play(image, 1.0), image)
    faster = speed_change.play(image, 1.25)
    assert torch.equal(faster[..., 173:], torch.full((1, 64, 43), -2.0))  # after the clip's end: silence
    for seed in range(20):
        torch.manual_seed(seed)
        assert speed_change(image).shape == image.shape


def test_between_class_on_mel_power_mixes_at_the_perceived_ratio():
    mix = BetweenClassMel(FRONTEND)
    centres = [1000.0 * 2 ** k for k in (-3, 2)]  # 125 Hz and 4 kHz: A-weighting differs by 17 dB
    edges = mel_band_edges_hz(FRONTEND.n_mels, FRONTEND.fmin, FRONTEND.fmax)[1:-1]
    bands = [int(np.argmin(abs(edges - c))) for c in centres]
    batch = torch.stack([band_image(bands[0]), band_image(bands[1])])
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, partner, ratio = mix(batch)
        if partner.tolist() == [1, 0]:
            break
    power = mix.power(mixed)
    weight = 10 ** (a_weighting_db(edges[bands]) / 10)
    own, other = (power[0, b].mean().item() * w for b, w in zip(bands, weight))
    r = ratio[0].item()
    # the A-weighted sounds stand in the ratio r : 1 - r in amplitude, whatever their own levels
    assert 10 * np.log10(own / other) == pytest.approx(20 * np.log10(r / (1 - r)), abs=0.05)
    assert mixed.shape == batch.shape and mixed.dtype == batch.dtype
    assert float(power.amax(dim=(-2, -1)).min()) == pytest.approx(1.0)  # relative to the mix's maximum again


def test_between_class_on_mel_power_leaves_a_clip_mixed_with_itself_unchanged():
    db = np.random.default_rng(0).uniform(-60, 0, (64, 30)).astype(np.float32)
    image = DB_FRONTEND.image(db - db.max())
    batch = torch.from_numpy(np.stack([image] * 4))
    torch.manual_seed(0)
    mixed, _, _ = BetweenClassMel(DB_FRONTEND)(batch)
    torch.testing.assert_close(mixed, batch, atol=1e-4, rtol=0)


def test_melcnn_mixes_images_by_mixup_or_by_mel_power():
    assert repr(build_mix(configure([]), frontend=FRONTEND)) == "Mixup(alpha=1.0)"
    between_class = configure(["--compression", "db", "--mix", "between-class"])
    assert isinstance(build_mix(between_class, frontend=DB_FRONTEND), BetweenClassMel)
    assert build_mix(configure(["--mix", "none"]), frontend=FRONTEND) is None
    assert isinstance(build_mix(configure(["--mix", "time-cutmix"]), frontend=FRONTEND), TimeCutMix)


def test_time_cutmix_gives_each_image_one_span_of_its_partners_frames_and_labels_it_by_their_share():
    """Every channel and band of an image takes the same span of frames from its partner, the span's frames are the
    partner's own (not blended), and the own label keeps the share of frames not replaced."""
    torch.manual_seed(0)
    x = torch.randn(16, 2, 8, 50)
    mixed, partner, share = TimeCutMix()(x)
    spans = []
    for i in range(16):
        from_partner = (mixed[i] == x[partner[i]]).all(dim=(0, 1))
        from_own = (mixed[i] == x[i]).all(dim=(0, 1))
        assert bool((from_partner | from_own).all())
        if partner[i] == i:  # paired with itself: nothing to tell apart
            continue
        frames = torch.nonzero(from_partner).flatten()
        if len(frames):
            assert int(frames[-1] - frames[0]) + 1 == len(frames)  # one contiguous span
        assert share[i] == pytest.approx(1 - len(frames) / 50)
        spans.append(len(frames))
    assert min(spans) < 25 < max(spans) and share.min() >= 0 and share.max() <= 1  # span lengths vary per image


def test_a_melcnn_run_trains_with_between_class_mixing(fake_esc50, tmp_path):
    from train.melcnn import main

    runs = tmp_path / "runs"
    argv = ["--data", str(fake_esc50), "--out", str(runs), "--device", "cpu", "--no-progress", "--epochs", "1",
            "--batch-size", "4", "--widths", "4", "--compression", "db", "--mix", "between-class"]
    assert main(argv) == 0
    (run,) = runs.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mix"] == "BetweenClassMel()" and np.isfinite(metrics["epochs"][0]["train_loss"])


def test_freq_mixstyle_gives_each_band_a_mixture_of_two_images_statistics():
    """Each (channel, band) row of the output has, over time, the mean and std mixed from its own and its partner's,
    and keeps its own shape over time (the row is only shifted and scaled)."""
    torch.manual_seed(0)
    x = torch.randn(6, 2, 8, 40) * torch.rand(6, 2, 8, 1) * 3 + torch.randn(6, 2, 8, 1) * 5
    mixstyle = FreqMixStyle(p=1.0)
    torch.manual_seed(1)
    out = mixstyle(x)
    torch.manual_seed(1)
    torch.rand(())
    share = torch.distributions.Beta(0.3, 0.3).sample((6, 1, 1, 1))
    partner = torch.randperm(6)
    mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)
    torch.testing.assert_close(out.mean(-1, keepdim=True), share * mean + (1 - share) * mean[partner])
    torch.testing.assert_close(out.std(-1, keepdim=True), share * std + (1 - share) * std[partner],
                               rtol=1e-4, atol=1e-4)
    shape_in = (x - mean) / std
    shape_out = (out - out.mean(-1, keepdim=True)) / out.std(-1, keepdim=True)
    torch.testing.assert_close(shape_out, shape_in, rtol=1e-3, atol=1e-3)


def test_freq_mixstyle_leaves_a_batch_alone_when_not_drawn_and_refuses_bad_settings():
    x = torch.randn(4, 2, 8, 20)
    assert FreqMixStyle(p=0.0)(x) is x
    with pytest.raises(ValueError, match="probability"):
        FreqMixStyle(p=1.5)
    with pytest.raises(ValueError, match="--freq-mixstyle"):
        configure(["--freq-mixstyle", "2"])


def test_a_melcnn_run_trains_with_freq_mixstyle(fake_esc50, tmp_path):
    from train.melcnn import main

    runs = tmp_path / "runs"
    argv = ["--data", str(fake_esc50), "--out", str(runs), "--device", "cpu", "--no-progress", "--epochs", "1",
            "--batch-size", "4", "--widths", "4", "--freq-mixstyle", "1"]
    assert main(argv) == 0
    (run,) = runs.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["restyle"] == "FreqMixStyle(p=1, alpha=0.3)" and np.isfinite(metrics["epochs"][0]["train_loss"])


def test_a_residual_melcnn_run_trains_with_time_cutmix(fake_esc50, tmp_path):
    from train.melcnn import main

    runs = tmp_path / "runs"
    argv = ["--data", str(fake_esc50), "--out", str(runs), "--device", "cpu", "--no-progress", "--epochs", "1",
            "--batch-size", "4", "--widths", "4,8", "--residual", "--mix", "time-cutmix"]
    assert main(argv) == 0
    (run,) = runs.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mix"] == "TimeCutMix()" and np.isfinite(metrics["epochs"][0]["train_loss"])
    assert torch.load(run / "best.pt", weights_only=False)["model_kwargs"]["residual"] is True


@pytest.mark.parametrize("flags, image_shape", [(["--sample-rate", "44100"], (2, 64, 216)),
                                                 (["--mel-bands", "128", "--freq-mask", "16"], (2, 128, 216)),
                                                 (["--hop-length", "256", "--time-mask", "48"], (2, 64, 431)),
                                                 (["--mel-bands", "128", "--stem-pool", "4"], (2, 128, 216)),
                                                 (["--compression", "pcen"], (1, 64, 216)),
                                                 (["--compression", "db"], (1, 64, 216)),
                                                 (["--compression", "db+pcen+dereverb"], (3, 64, 216))])
def test_a_run_on_another_front_end_exports_a_model_whose_edge_builds_its_image(fake_esc50, tmp_path, flags,
                                                                                 image_shape):
    from train.melcnn import main

    runs = tmp_path / "runs"
    argv = ["--data", str(fake_esc50), "--out", str(runs), "--device", "cpu", "--no-progress", "--epochs", "1",
            "--batch-size", "4", "--widths", "4", "--cache-dir", str(tmp_path / "cache"), *flags]
    assert main(argv) == 0
    (run,) = runs.iterdir()
    config = json.loads((run / "config.json").read_text())
    frontend = MelCNNConfig.from_saved(config).frontend()
    assert frontend.image_shape == image_shape and frontend != FRONTEND
    assert to_onnx.main([str(run), "--data", str(fake_esc50), "--latency-repeats", "2", "--threads", "1"]) == 0
    classifier = Classifier(run / "model.onnx")
    assert classifier.frontend == frontend
    wave = np.random.default_rng(0).standard_normal(5 * 48000).astype(np.float32)
    assert np.array_equal(classifier.features(wave, 48000)[0], frontend(wave, 48000))
    assert classifier.features(wave, 48000).shape == (1, *image_shape)


def untrained_run(run: Path, frequency_position: bool = False, pooling: str = "mean+max",
                  residual: bool = False, sub_bands: int = 1) -> Path:
    """A MelCNN run folder as the engine writes it (best.pt, metrics.json), with untrained weights."""
    torch.manual_seed(0)
    kwargs = {"n_classes": len(CLASSES), "widths": [4, 8], "dropout": 0.3, "pooling": pooling,
              "in_channels": FRONTEND.channels, "frequency_position": frequency_position, "residual": residual,
              "sub_bands": sub_bands}
    run.mkdir()
    spec = {"kind": LOG_MEL_IMAGE, "sample_rate": FRONTEND.sample_rate, "clip_seconds": 5.0,
            "frontend": FRONTEND.to_json()}
    torch.save({"model_name": "melcnn", "model_kwargs": kwargs, "state_dict": MelCNN(**kwargs).state_dict(),
                "classes": CLASSES, "input": spec, "epoch": 1, "valid_accuracy": 0.5}, run / "best.pt")
    (run / "metrics.json").write_text(json.dumps({"model": "melcnn", "split": "book", "seed": 0, "commit": "abc",
                                                  "settings": {"crop_seconds": 2.5}, "test_accuracy": 0.5}))
    return run


def test_crop_averaging_averages_evenly_spaced_crops_and_reports_every_variant(tmp_path, fake_esc50):
    model = MelCNN(n_classes=3, widths=(4,)).eval()
    images = torch.randn(2, 2, 64, 216)
    with torch.no_grad():
        expected = torch.stack([model(images[..., s:s + 108]).softmax(-1) for s in (0, 54, 108)]).mean(0)
    assert torch.allclose(crop_average(model, images, 108, 3), expected, atol=1e-6)
    run, out = untrained_run(tmp_path / "melcnn-book-seed0"), tmp_path / "crops.json"
    assert crop_averaging.main([str(run), "--data", str(fake_esc50), "--cache-dir", str(tmp_path / "cache"),
                                "--folds", "4,5", "--out", str(out)]) == 0
    accuracy = json.loads(out.read_text())["accuracy"]
    assert set(accuracy) == {"fold 4", "fold 5"}
    assert len(accuracy["fold 4"]) == 1 + 2 * len(crop_averaging.VARIANTS)
    assert all(value in (0.0, 0.5, 1.0) for value in accuracy["fold 5"].values())  # two clips per fold


def test_rescoring_tools_refuse_a_run_that_is_not_log_mel_with_its_name(tmp_path, fake_esc50, capsys):
    run = untrained_run(tmp_path / "audionet-book-seed0")
    checkpoint = torch.load(run / "best.pt", weights_only=False)
    checkpoint["input"]["kind"] = "waveform"
    torch.save(checkpoint, run / "best.pt")
    torch.save({"model": checkpoint["state_dict"], "ema": {"state_dict": checkpoint["state_dict"]}}, run / "last.pt")
    for tool in (crop_averaging, weight_average, precise_bn):
        assert tool.main([str(run), "--data", str(fake_esc50), "--out", str(tmp_path / "out.json")]) == 2
        assert f"error: {run}: not a log-mel model" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_weight_average_scores_the_raw_and_the_averaged_final_weights_of_each_run(tmp_path, fake_esc50, capsys):
    run = untrained_run(tmp_path / "melcnn-book-seed0")
    out, cache = tmp_path / "ema.json", str(tmp_path / "cache")
    assert weight_average.main([str(run), "--data", str(fake_esc50), "--cache-dir", cache, "--out", str(out)]) == 2
    assert f"error: {run / 'last.pt'}: no last.pt here" in capsys.readouterr().err
    raw = torch.load(run / "best.pt", weights_only=False)["state_dict"]
    raw["classifier.weight"] = torch.zeros_like(raw["classifier.weight"])
    raw["classifier.bias"] = torch.tensor([5.0, 0.0])  # always low_tone, sure of it
    ema = {**raw, "classifier.bias": torch.zeros(2)}   # never sure: p = 1/2 for both classes
    torch.save({"model": raw, "ema": None}, run / "last.pt")
    assert weight_average.main([str(run), "--data", str(fake_esc50), "--cache-dir", cache, "--out", str(out)]) == 2
    assert "trained without --ema" in capsys.readouterr().err
    torch.save({"model": raw, "ema": {"state_dict": ema, "updates": 10}}, run / "last.pt")
    assert weight_average.main([str(run), "--data", str(fake_esc50), "--cache-dir", cache,
                                "--folds", "4,5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    fold5 = result["runs"]["melcnn-book-seed0"]["fold 5"]  # one low_tone and one high_tone clip
    sure = -np.log(1 / (1 + np.exp(-5.0)))
    assert fold5["raw"]["accuracy"] == 0.5 and fold5["raw"]["cross_entropy"] == pytest.approx((sure + sure + 5) / 2)
    assert fold5["ema"]["cross_entropy"] == pytest.approx(np.log(2))
    assert set(result["mean_accuracy"]) == {"fold 4", "fold 5"}


@pytest.mark.parametrize("frequency_position, pooling, residual, sub_bands", [
    (False, "mean+max", False, 1), (True, "mean+max", False, 1), (False, "mean+attention", False, 1),
    (False, "mean+max", True, 1), (False, "mean+max", False, 4)])
def test_export_has_parity_and_the_edge_builds_its_64_band_image(tmp_path, fake_esc50, frequency_position, pooling,
                                                                 residual, sub_bands):
    run = untrained_run(tmp_path / "melcnn-book-seed0", frequency_position, pooling, residual, sub_bands)
    flags = ["--data", str(fake_esc50), "--latency-repeats", "2", "--threads", "1", "--int8"]
    assert to_onnx.main([str(run), *flags]) == 0
    report = json.loads((run / "model.report.json").read_text())
    assert report["passed"] and report["fp32"]["parity_vs_torch"]["max_abs_logit_diff"] <= 1e-4
    assert (run / "model.int8.onnx").exists()
    classifier = Classifier(run / "model.onnx")
    assert classifier.frontend == FRONTEND and classifier.meta["model_name"] == "melcnn"
    wave = np.random.default_rng(1).standard_normal(5 * 16000).astype(np.float32)
    features = classifier.features(wave, 16000)
    assert features.shape == (1, 2, 64, 216)
    with torch.no_grad():
        expected = to_onnx.Run.load(run).build_model()(torch.from_numpy(features)).softmax(-1)[0].numpy()
    assert np.allclose(classifier.infer(features), expected, atol=1e-5)


def burst_log_mel(seconds: float = 0.5, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(FRONTEND.clip_samples) / FRONTEND.sample_rate
    return FRONTEND.log_mel((np.sin(2 * np.pi * hz * t) * (t < seconds)).astype(np.float32), FRONTEND.sample_rate)


def test_recording_conditions_keep_the_cache_layout_and_do_nothing_at_p_0():
    db = burst_log_mel()
    assert np.array_equal(RecordingConditions(FRONTEND, p=0.0)(db), db)
    torch.manual_seed(0)
    out = RecordingConditions(FRONTEND, p=1.0)(db)
    assert out.shape == db.shape and out.dtype == np.float32
    assert out.max() == 0.0 and out.min() >= -FRONTEND.top_db and not np.array_equal(out, db)
    with pytest.raises(ValueError, match="probability"):
        RecordingConditions(FRONTEND, p=1.5)


def test_reverberation_decays_by_60_db_in_rt60():
    conditions = RecordingConditions(FRONTEND, rt60_s=(0.5, 0.5), drr_db=(0.0, 0.0))
    power = torch.zeros(64, 216, dtype=torch.float64)
    power[:, :10] = 1.0  # a burst of 10 frames, then nothing
    out = conditions.reverberate(power).numpy()
    frames_per_s = FRONTEND.sample_rate / FRONTEND.hop_length
    later = 20 + 10
    lowest, highest = (10 * np.log10(out[band, 20] / out[band, later]) for band in (0, -1))
    expected = 60 * (10 / frames_per_s) / 0.5  # 60 dB per 0.5 s in the lowest band
    assert lowest == pytest.approx(expected, abs=0.1)
    assert highest == pytest.approx(expected / 0.6, abs=0.1)  # RT60 40 % shorter in the top band
    # DRR 0 dB: the tail carries as much as the sound
    assert out.sum() == pytest.approx(2 * power.sum().item(), rel=0.01)
    assert np.allclose(conditions.reverberate(torch.zeros_like(power)), 0)


def test_noise_is_added_at_the_drawn_snr_with_the_drawn_slope():
    torch.manual_seed(0)
    conditions = RecordingConditions(FRONTEND, snr_db=(10.0, 10.0))
    power = torch.from_numpy(10 ** (burst_log_mel() / 10)).double()
    noise = conditions.noise(power)
    assert 10 * np.log10(float(power.mean() / noise.mean())) == pytest.approx(10.0, abs=1e-6)
    spectrum = 10 * np.log10(noise.mean(dim=1).numpy())
    octaves = np.log2(conditions.centres[:, 0].numpy() / 1000)
    slope = np.polyfit(octaves[octaves > -2], spectrum[octaves > -2], 1)[0]
    assert -7.0 < slope < 4.0  # drawn in -6..+3 dB per octave (the level may also wander over time)


def test_a_background_clip_is_added_at_the_drawn_snr_and_rolled_in_time():
    burst = burst_log_mel(hz=500.0, seconds=1.0)  # a 1-s burst, then the floor
    other = burst_log_mel(hz=4000.0, seconds=1.0)
    conditions = RecordingConditions(FRONTEND, snr_db=(10.0, 10.0), backgrounds=np.stack([other] * 3))
    power = torch.from_numpy(10 ** (burst / 10)).double()
    torch.manual_seed(0)
    added = [conditions.background(power, conditions.backgrounds) for _ in range(5)]
    for background in added:
        assert background.shape == power.shape
        assert 10 * np.log10(float(power.mean() / background.mean())) == pytest.approx(10.0, abs=1e-6)
        band = np.argmax(background.sum(dim=1).numpy())  # the 4-kHz tone, not the clip's 500 Hz
        assert abs(conditions.centres[band, 0].item() - 4000) < 500
    onsets = {int(np.argmax(b.sum(dim=0).numpy() > 0.5 * b.sum(dim=0).max().item())) for b in added}
    assert len(onsets) > 1  # a new place in time each draw
    torch.manual_seed(0)
    out = RecordingConditions(FRONTEND, p=1.0, backgrounds=np.stack([other]))(burst)
    assert out.shape == burst.shape and out.max() == 0.0
    with pytest.raises(ValueError, match="backgrounds must be"):
        RecordingConditions(FRONTEND, backgrounds=np.zeros((2, 32, 216)))


def test_a_clip_in_a_room_is_one_of_its_own_copies_from_train_rooms():
    """With ``rooms``, reverberation is a copy of the clip heard in a room (row ``index``), not the mel-power one."""
    clip = burst_log_mel(hz=1000.0)
    copies = np.stack([np.stack([burst_log_mel(hz=hz)] * 3) for hz in (800.0, 2000.0)])  # (clips, copies, ...)
    conditions = RecordingConditions(FRONTEND, p=1.0, rooms=copies)
    conditions.reverberate = lambda power: pytest.fail("reverberation on mel power as well as a room")
    assert "rooms=3 per clip" in repr(conditions)
    centres = conditions.centres[:, 0].numpy()
    torch.manual_seed(0)
    for index, hz in enumerate((800.0, 2000.0)):
        loudest = np.argmax(conditions(clip, index).max(axis=1))
        assert abs(centres[loudest] - hz) < 0.1 * hz
    with pytest.raises(ValueError, match="rooms must be"):
        RecordingConditions(FRONTEND, rooms=np.zeros((2, 64, 216)))


def test_microphone_band_attenuates_below_and_above_its_corners():
    conditions = RecordingConditions(FRONTEND, highpass_hz=(300.0, 300.0), lowpass_hz=(3400.0, 3400.0),
                                     tilt_db_per_octave=0.0)
    gain_db = 10 * np.log10(conditions.microphone()[:, 0].numpy())
    centres = conditions.centres[:, 0].numpy()
    assert np.all(gain_db[centres < 100] < -9) and np.all(gain_db[centres > 10000] < -9)
    assert gain_db[np.argmin(abs(centres - 1000))] > -1


def test_the_clean_view_is_the_clean_clip_cut_and_masked_with_the_recorded_one():
    from train.datasets import LogMelImages

    clean = burst_log_mel(seconds=1.0)[None]
    quieter = 10.0  # "conditions" that turn the clip down by 10 dB (relative to the peak, above the floor)
    images = LogMelImages(clean, [0], DB_FRONTEND, transform=RandomTimeCrop(50, DB_FRONTEND),
                          conditions=lambda db, index: np.maximum(db - quieter, -DB_FRONTEND.top_db), clean_view=True)
    torch.manual_seed(0)
    image, _ = images[0]
    student, teacher = image
    assert image.shape == (2, 64, 50)
    full = torch.from_numpy(DB_FRONTEND.image(clean[0]))[0]
    starts = [s for s in range(216 - 50 + 1) if torch.equal(full[:, s:s + 50], teacher)]
    assert len(starts) == 1  # the teacher sees a crop of the clean clip ...
    loud = teacher > teacher.min() + quieter / (DB_FRONTEND.top_db * DB_FRONTEND.std[0]) + 1e-3
    step = (teacher - student)[loud]  # ... the same crop the student sees, recorded 10 dB quieter
    expected = quieter / (DB_FRONTEND.top_db * DB_FRONTEND.std[0])
    assert loud.any() and torch.allclose(step, torch.full_like(step, expected))


def test_a_teacher_must_share_the_front_end_and_never_have_seen_the_students_selection_or_test_folds(tmp_path):
    from train.data.esc50 import parse_splits
    from train.distillation import AveragedModels, load_teacher

    spec = {"kind": LOG_MEL_IMAGE, "sample_rate": FRONTEND.sample_rate, "clip_seconds": 5.0,
            "frontend": FRONTEND.to_json()}
    book, cv5 = parse_splits("book")[0], parse_splits("cv5")[0]
    build = lambda kwargs: MelCNN(**kwargs)  # noqa: E731
    book_run = untrained_run(tmp_path / "book")
    assert isinstance(load_teacher([book_run], build, spec, CLASSES, book), MelCNN)
    cv5_run = untrained_run(tmp_path / "cv5")
    metrics = json.loads((cv5_run / "metrics.json").read_text())
    (cv5_run / "metrics.json").write_text(json.dumps({**metrics, "split": "cv5"}))
    with pytest.raises(ValueError, match=r"cv5.*trained or selected on fold 4.*\(book\)"):
        # cv5 trained on fold 4, which the book split selects on
        load_teacher([book_run, cv5_run], build, spec, CLASSES, book)
    assert isinstance(load_teacher([book_run, cv5_run], build, spec, CLASSES, cv5), AveragedModels)
    with pytest.raises(ValueError, match=r"book.*trained or selected on fold 2"):
        load_teacher([book_run], build, spec, CLASSES, parse_splits("cv2")[0])
    other = {**spec, "frontend": melcnn_frontend(44100).to_json()}
    with pytest.raises(ValueError, match=r"--teacher .*book.*front end"):
        load_teacher([book_run], build, other, CLASSES, book)
    with pytest.raises(ValueError, match="classes"):
        load_teacher([book_run], build, spec, ["a", "b"], book)


class Fixed(torch.nn.Module):
    """Answers ``logits`` whatever it sees."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_averaged_models_average_probabilities():
    from train.distillation import AveragedModels

    pair = AveragedModels([Fixed([0.0, 0.0]), Fixed([2.0, 0.0])])
    expected = (torch.tensor([0.5, 0.5]) + torch.tensor([2.0, 0.0]).softmax(0)) / 2
    assert torch.allclose(pair(torch.zeros(3, 1)).softmax(1), expected.expand(3, -1))


def test_clip_targets_mix_the_labels_with_the_teachers_softened_probabilities():
    from train.distillation import AveragedModels, clip_targets

    labels = np.array([0, 1, 2, 0, 1])
    clips = torch.utils.data.TensorDataset(torch.zeros(5, 2, 64, 216), torch.as_tensor(labels))
    one, other = Fixed([4.0, 0.0, 0.0]), Fixed([0.0, 0.0, 4.0])
    targets = clip_targets(one, clips, weight=0.25, temperature=2.0, batch_size=2)
    taught = torch.tensor([2.0, 0.0, 0.0]).softmax(0).numpy()  # logits / 2
    assert targets.shape == (5, 3) and np.allclose(targets.sum(1), 1)
    assert np.allclose(targets, 0.75 * np.eye(3)[labels] + 0.25 * taught, atol=1e-6)
    pair = clip_targets(AveragedModels([one, other]), clips, weight=1.0, temperature=2.0)
    taught_pair = (taught + torch.tensor([0.0, 0.0, 2.0]).softmax(0).numpy()) / 2  # each softened, then averaged
    assert np.allclose(pair, taught_pair, atol=1e-6)
    assert np.allclose(clip_targets(one, clips, weight=0.0), np.eye(3)[labels])
    with pytest.raises(ValueError, match="temperature"):
        clip_targets(one, clips, weight=0.5, temperature=0.0)


@pytest.mark.parametrize("compression", ["pcen", "db+pcen"])
def test_pcen_refuses_between_class_mixing_which_reads_power_back_from_a_db_image(compression):
    assert configure(["--compression", compression]).compression == compression
    assert configure(["--compression", "db", "--mix", "between-class"]).mix == "between-class"
    with pytest.raises(ValueError, match=re.escape(f"--compression {compression} needs --mix mixup or none")):
        configure(["--compression", compression, "--mix", "between-class"])


def test_distillation_settings_are_checked_once_in_the_config():
    assert configure([]).teacher == () and configure(["--teacher", "a", "b"]).teacher == ("a", "b")
    with pytest.raises(ValueError, match="--teacher-weight"):
        configure(["--teacher", "a", "--teacher-weight", "1.5"])
    with pytest.raises(ValueError, match="--teacher and --consistency need --mix mixup or none"):
        configure(["--teacher", "a", "--compression", "db", "--mix", "between-class"])
    assert configure([]).teacher_views == "crop" and configure([]).teacher_temperature == 1
    clip = configure(["--teacher", "a", "--teacher-views", "clip", "--teacher-temperature", "2"])
    assert (clip.teacher_views, clip.teacher_temperature) == ("clip", 2)
    with pytest.raises(ValueError, match="--teacher-temperature .* only with --teacher-views clip"):
        configure(["--teacher", "a", "--teacher-temperature", "2"])
    with pytest.raises(ValueError, match="--teacher-temperature must be > 0"):
        configure(["--teacher", "a", "--teacher-views", "clip", "--teacher-temperature", "0"])


def test_consistency_settings_are_checked_once_in_the_config():
    assert configure([]).consistency == 0 and configure(["--consistency", "12"]).consistency == 12
    with pytest.raises(ValueError, match="--consistency must be >= 0, not -1"):
        configure(["--consistency", "-1"])
    with pytest.raises(ValueError, match="--consistency .* needs --conditions > 0"):
        configure(["--consistency", "12", "--conditions", "0"])
    with pytest.raises(ValueError, match="--teacher and --consistency need --mix mixup or none"):
        configure(["--consistency", "12", "--compression", "db", "--mix", "between-class"])


def test_a_student_trains_from_a_teacher_run_or_with_consistency_under_recording_conditions(fake_esc50, tmp_path):
    from train.melcnn import main

    common = ["--data", str(fake_esc50), "--device", "cpu", "--no-progress", "--epochs", "1", "--batch-size", "4",
              "--widths", "4", "--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "--out", str(tmp_path / "teacher")]) == 0
    (teacher,) = (tmp_path / "teacher").iterdir()
    assert main([*common, "--out", str(tmp_path / "student"), "--teacher", str(teacher), "--conditions", "1"]) == 0
    (student,) = (tmp_path / "student").iterdir()
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["settings"]["teacher"] == [str(teacher)] and metrics["settings"]["teacher_weight"] == 0.5
    assert np.isfinite(metrics["epochs"][0]["train_loss"]) and metrics["model_kwargs"]["in_channels"] == 2
    cv2 = ["--split", "cv2", "--out", str(tmp_path / "refused"), "--teacher", str(teacher)]
    assert main([*common, *cv2]) == 2  # the book-split teacher trained on fold 2
    whole_clips = ["--teacher", str(teacher), "--teacher-views", "clip", "--teacher-temperature", "2"]
    assert main([*common, "--out", str(tmp_path / "clip-student"), *whole_clips, "--conditions", "1"]) == 0
    (clip_student,) = (tmp_path / "clip-student").iterdir()
    metrics = json.loads((clip_student / "metrics.json").read_text())
    assert metrics["settings"]["teacher_views"] == "clip" and metrics["settings"]["teacher_temperature"] == 2
    assert np.isfinite(metrics["epochs"][0]["train_loss"])
    assert main([*common, *cv2[:-2], *whole_clips]) == 2  # refused alike when the teacher sees whole clips
    assert main([*common, "--out", str(tmp_path / "consistent"), "--consistency", "12", "--conditions", "1"]) == 0
    (consistent,) = (tmp_path / "consistent").iterdir()
    metrics = json.loads((consistent / "metrics.json").read_text())
    assert metrics["settings"]["consistency"] == 12 and np.isfinite(metrics["epochs"][0]["train_loss"])


def test_precise_bn_recomputes_the_statistics_as_plain_means_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = MelCNN(n_classes=3, widths=(4,)).eval()
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(64, 2, 64, 216) * 3 + 1
    recomputed = precise_bn.recompute_batchnorm(model, images)
    with torch.no_grad():
        first = recomputed.features[0](images)  # the first convolution, before its BatchNorm
    assert torch.allclose(recomputed.features[1].running_mean, first.mean((0, 2, 3)), atol=1e-4)
    assert not recomputed.training and not recomputed.features[1].training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in kept.items())
    with pytest.raises(ValueError, match="no BatchNorm"):
        precise_bn.recompute_batchnorm(nn.Linear(3, 2), images)


def test_precise_bn_scores_each_variant_and_the_runs_averaged(tmp_path, fake_esc50):
    runs = [untrained_run(tmp_path / f"melcnn-book-seed{seed}") for seed in (0, 1)]
    out, cache = tmp_path / "bn.json", str(tmp_path / "cache")
    assert precise_bn.main([*map(str, runs), "--data", str(fake_esc50), "--cache-dir", cache,
                            "--folds", "4,5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    variants = {"as trained", "whole windows", "2.5-s crops"}  # the runs' training crops (untrained_run)
    assert set(result["runs"]) == {"melcnn-book-seed0", "melcnn-book-seed1"}
    assert set(result["runs"]["melcnn-book-seed0"]["fold 4"]) == variants
    assert set(result["runs averaged"]["fold 5"]) == variants
    assert all(s["accuracy"] in (0.0, 0.5, 1.0) for s in result["runs averaged"]["fold 5"].values())


def test_precise_bn_crops_as_long_as_the_runs_trained_on_and_refuses_runs_without_one_length(tmp_path, fake_esc50,
                                                                                              capsys):
    runs = [untrained_run(tmp_path / f"melcnn-book-seed{seed}") for seed in (0, 1)]
    out, cache = tmp_path / "bn.json", str(tmp_path / "cache")

    def set_crop_seconds(run, seconds):
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["settings"]["crop_seconds"] = seconds
        (run / "metrics.json").write_text(json.dumps(metrics))

    set_crop_seconds(runs[1], 1.5)
    assert precise_bn.main([*map(str, runs), "--data", str(fake_esc50), "--cache-dir", cache, "--out", str(out)]) == 2
    assert f"error: {runs[1]}: trained on 1.5-s crops, {runs[0]} on 2.5-s ones" in capsys.readouterr().err
    set_crop_seconds(runs[1], 0)
    assert precise_bn.main([str(runs[1]), "--data", str(fake_esc50), "--cache-dir", cache, "--out", str(out)]) == 2
    assert f"error: {runs[1]}: trained on whole clips" in capsys.readouterr().err
    assert not out.exists()
    set_crop_seconds(runs[0], 1.5)
    assert precise_bn.main([str(runs[0]), "--data", str(fake_esc50), "--cache-dir", cache, "--out", str(out)]) == 0
    assert "1.5-s crops" in json.loads(out.read_text())["runs"]["melcnn-book-seed0"]["fold 4"]


@pytest.mark.parametrize("tool", [crop_averaging, weight_average, precise_bn])
def test_rescoring_tools_refuse_a_fold_the_run_trained_on_and_a_run_that_is_not_finished(tool, tmp_path, fake_esc50,
                                                                                         capsys):
    run, out = untrained_run(tmp_path / "melcnn-book-seed0"), tmp_path / "out.json"
    state = torch.load(run / "best.pt", weights_only=False)["state_dict"]
    torch.save({"model": state, "ema": {"state_dict": state, "updates": 1}}, run / "last.pt")
    assert tool.main([str(run), "--data", str(fake_esc50), "--folds", "3,4", "--out", str(out)]) == 2
    assert f"error: {run}: trained on folds 1, 2, 3; score it on the others" in capsys.readouterr().err
    (run / "metrics.json").unlink()
    assert tool.main([str(run), "--data", str(fake_esc50), "--folds", "4", "--out", str(out)]) == 2
    assert f"{run / 'metrics.json'}: not a finished run" in capsys.readouterr().err
    for folds in ("4,a", "6"):
        with pytest.raises(SystemExit):
            tool.main([str(run), "--data", str(fake_esc50), "--folds", folds, "--out", str(out)])
        assert "--folds: " in capsys.readouterr().err
    assert not out.exists()
