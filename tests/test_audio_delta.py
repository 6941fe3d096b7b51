"""The audio perturbation's two parametrizations (perturb.audio_delta): inside the budget
by construction, click-free, calibrated, masked (NMR), differentiable, deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harmonycloak.errors import InputError
from harmonycloak.perturb.audio_delta import (
    DominantTonePerturbation,
    MaskedSpectrumPerturbation,
    relative_rms_regularizer,
)
from harmonycloak.perturb.budget import (
    MaskedSpectrumBudget,
    dominant_tone_budget,
    leak_db,
    masked_spectrum_budget,
)
from harmonycloak.perturb.optimize import EngineSettings, min_min
from harmonycloak.psychoacoustics import (
    masking_threshold,
    nmr_summary,
    noise_to_mask_ratio,
    psd_db,
)

RATES = (44100, 48000)
MAX_LOGIT = 40.0  # sigmoid(40) == 1.0 in float32: the largest allowed amplitude


def music(sr: int, channels: int = 2, seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """Chords with harmonics and decays, noise bursts with sharp onsets, and silences:
    float32 ``[channels, samples]``; every fourth half-second segment is silent."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros((channels, n))
    chords = [[48, 52, 55, 60], [53, 57, 60, 65], [55, 59, 62, 67], [45, 48, 52, 57]]
    segment = sr // 2
    for ch in range(channels):
        for i in range(-(-n // segment)):
            lo, hi = i * segment, min(n, (i + 1) * segment)
            if i % 4 == 3:
                continue
            t = np.arange(hi - lo) / sr
            env = (1 - np.exp(-t / 0.01)) * np.exp(-t / 0.4)
            for pitch in chords[(i + ch) % 4]:
                f0 = 440.0 * 2 ** ((pitch - 69) / 12)
                for k in range(1, 8):
                    if k * f0 < 0.45 * sr:
                        out[ch, lo:hi] += env * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) / k**1.2
            if i % 2 == 1:
                end = min(hi, lo + int(0.08 * sr))
                burst = rng.standard_normal(end - lo) * np.exp(-np.arange(end - lo) / sr / 0.03)
                out[ch, lo:end] += 0.8 * np.diff(burst, prepend=0.0)
        out[ch] *= (0.5 if ch == 0 else 0.3) / np.abs(out[ch]).max()
    return torch.from_numpy(out.astype(np.float32))


def sine(sr: int, hz: float, seconds: float, amplitude: float = 0.3, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return torch.stack([amplitude * torch.sin(2 * math.pi * hz * t + c) for c in range(channels)]).float()


def at_max(params: torch.Tensor) -> torch.Tensor:
    out = params.detach().clone()
    out[0] = MAX_LOGIT
    return out


def snr_db(x: torch.Tensor, delta: torch.Tensor) -> float:
    return float(10 * torch.log10(x.double().square().sum() / delta.double().square().sum()))


@pytest.fixture(scope="module", params=RATES)
def stereo_music(request):
    sr = request.param
    x = music(sr)
    return x, sr, masking_threshold(x, sr)


# --- shapes, bounds, silence -------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("channels", (1, 2))
def test_both_modes_render_the_clip_shape_inside_the_bounds(sr, channels):
    x = music(sr, channels=channels, seconds=1.0, seed=channels)
    tone = DominantTonePerturbation(dominant_tone_budget(x, sr))
    spec = MaskedSpectrumPerturbation(masked_spectrum_budget(x, sr))
    gen = torch.Generator().manual_seed(3)
    for perturbation in (tone, spec):
        params = perturbation.init_params()
        assert params.requires_grad and params.shape == perturbation.params_shape
        wild = 20 * torch.randn(params.shape, generator=gen)
        for p in (params, wild, at_max(params)):
            delta = perturbation.delta(p)
            assert delta.shape == x.shape and delta.dtype == torch.float32
            assert bool(torch.isfinite(delta).all())
    b = tone.budget
    amp = tone.amplitudes(20 * torch.randn(tone.params_shape, generator=gen))
    assert bool((amp >= b.lower - 1e-7).all()) and bool((amp <= b.upper + 1e-7).all())
    # a tone never exceeds its window's largest bound (the cross-fade weights sum to one)
    top = tone.delta(at_max(tone.init_params())).abs().amax(-1)
    assert bool((top <= b.upper.amax(-1) * (1 + 1e-4)).all())
    mag = spec.magnitudes(20 * torch.randn(spec.params_shape, generator=gen))
    sb = spec.budget
    assert bool((mag >= sb.lower - 1e-7).all()) and bool((mag <= sb.upper + 1e-7).all())


@pytest.mark.parametrize("sr", RATES)
def test_silence_gives_exactly_zero_noise(sr):
    x = torch.zeros(2, sr // 3)
    gen = torch.Generator().manual_seed(0)
    for perturbation in (DominantTonePerturbation(dominant_tone_budget(x, sr)),
                         MaskedSpectrumPerturbation(masked_spectrum_budget(x, sr))):
        for params in (perturbation.init_params(), 30 * torch.randn(perturbation.params_shape, generator=gen)):
            params = params.detach().requires_grad_(True)
            assert torch.count_nonzero(perturbation.delta(params)) == 0
            assert torch.equal(perturbation.apply(x, params), x)
            reg = perturbation.regularizer(params)
            (grad,) = torch.autograd.grad(reg, params)
            assert float(reg.detach()) == 0.0 and bool(torch.isfinite(grad).all())


def test_noise_goes_only_where_the_budget_is_active():
    sr = 44100
    x = torch.cat([sine(sr, 440.0, 0.5), torch.zeros(1, sr // 2)], -1)  # music then silence
    tone = DominantTonePerturbation(dominant_tone_budget(x, sr))
    spec = MaskedSpectrumPerturbation(masked_spectrum_budget(x, sr))
    for perturbation in (tone, spec):
        delta = perturbation.delta(at_max(perturbation.init_params()))
        assert float(delta[0, : sr // 2 - 2048].abs().max()) > 1e-3
        # post-masking lasts up to 200 ms; after that the silence stays untouched
        assert float(delta[0, sr // 2 + int(0.25 * sr) :].abs().max()) == 0.0


# --- the dominant-tone renderer ------------------------------------------------------------


@pytest.mark.parametrize("sr", RATES)
def test_dominant_tones_have_no_clicks(sr):
    """Second differences stay those of a smooth sinusoid: |Δ²δ| <= ω_max²·max|δ| plus a small
    envelope term, for the paper's phases (0) and for wild random phases per window; a hard
    switch between windows (no cross-fade) would exceed the bound many times over."""
    x = music(sr, channels=1, seconds=1.5, seed=4)
    budget = dominant_tone_budget(x, sr)
    perturbation = DominantTonePerturbation(budget)
    omega_max = 2 * math.pi * float(budget.frequency_hz[budget.active].max()) / sr
    gen = torch.Generator().manual_seed(1)
    params = at_max(perturbation.init_params())
    wild = params.clone()
    wild[1] = 2 * math.pi * torch.rand(wild[1].shape, generator=gen)
    wild[0] = 4 * torch.randn(wild[0].shape, generator=gen)
    for p in (params, wild):
        delta = perturbation.delta(p)[0].double()
        peak = float(delta.abs().max())
        second = (delta[2:] - 2 * delta[1:-1] + delta[:-2]).abs().max()
        envelope = (math.pi / budget.window_samples) * (2 * omega_max + math.pi / budget.window_samples)
        assert float(second) <= peak * (omega_max**2 + envelope) * 1.05
    # the bound is tight enough to catch a click: the same windows without cross-fades
    w = budget.window_samples
    amp = perturbation.amplitudes(wild)[0].repeat_interleave(w)[: x.shape[-1]]
    phase = wild[1, 0].repeat_interleave(w)[: x.shape[-1]]
    freq = budget.frequency_hz[0].repeat_interleave(w)[: x.shape[-1]].double()
    n = torch.arange(x.shape[-1], dtype=torch.float64)
    hard = amp.double() * torch.sin(2 * math.pi * freq * n / sr + phase.double())
    second = (hard[2:] - 2 * hard[1:-1] + hard[:-2]).abs().max()
    assert float(second) > 5 * float(hard.abs().max()) * (omega_max**2 + envelope)


@pytest.mark.parametrize("sr", RATES)
def test_a_steady_tone_gives_one_unbroken_sinusoid(sr):
    """Same frequency in every window: the windows' tones join with continuous phase, so
    δ's energy sits in the main lobe of one sinusoid (random phases per window would
    scatter it)."""
    hz = 523.25
    x = sine(sr, hz, 1.0)
    budget = dominant_tone_budget(x, sr)
    perturbation = DominantTonePerturbation(budget)
    delta = perturbation.delta(at_max(perturbation.init_params()))[0].double()
    inner = delta[sr // 10 : -sr // 10]
    window = torch.hann_window(inner.numel(), periodic=False, dtype=torch.float64)
    power = torch.fft.rfft(inner * window).abs().square()
    bin_hz = sr / inner.numel()
    k = round(hz / bin_hz)
    share = float(power[k - 4 : k + 5].sum() / power.sum())
    assert share > 0.999
    # the envelope is flat: amplitude within 0.5 dB of its mean over the steady part
    frames = inner[: inner.numel() // 512 * 512].reshape(-1, 512)
    rms = frames.square().mean(-1).sqrt()
    assert float(20 * torch.log10(rms.max() / rms.min())) < 0.5


def test_dominant_tone_sits_at_the_dominant_frequency():
    sr = 44100
    x = sine(sr, 1000.0, 0.6, channels=2)
    perturbation = DominantTonePerturbation(dominant_tone_budget(x, sr))
    delta = perturbation.delta(at_max(perturbation.init_params()))
    spectrum = torch.fft.rfft(delta[:, 4410:-4410].double(), dim=-1).abs()
    peak_hz = spectrum.argmax(-1).double() * sr / (x.shape[-1] - 8820)
    assert torch.allclose(peak_hz, torch.tensor(1000.0, dtype=torch.float64), atol=3.0)


# --- the masked-spectrum renderer ----------------------------------------------------------


def _one_bin_budget(sr: int, samples: int, k: int, amplitude: float) -> MaskedSpectrumBudget:
    n, hop = 1024, 512
    frames = 1 + samples // hop
    bounds = torch.zeros(1, frames, n // 2 + 1)
    bounds[..., k] = amplitude
    return MaskedSpectrumBudget(
        lower=bounds.clone(), upper=bounds.clone(), active=bounds > 0,
        channel_rms=torch.ones(1), channel_weights=torch.ones(1), n_fft=n, hop_length=hop,
        sample_rate_hz=sr, num_samples=samples, margin_db=0.0,
    )


@pytest.mark.parametrize("sr", RATES)
def test_masked_spectrum_magnitude_is_the_amplitude_of_a_sinusoid(sr):
    """Calibration: constant magnitude a in bin k with phases advancing pi*k per hop is one
    continuous sinusoid of peak amplitude a, which the analysis reads at 96 + 20 log10(a)."""
    samples, k, a = sr // 2, 40, 0.01
    budget = _one_bin_budget(sr, samples, k, a)
    perturbation = MaskedSpectrumPerturbation(budget)
    params = perturbation.init_params().detach().clone()
    params[1] = (math.pi * k * torch.arange(budget.num_frames, dtype=torch.float64)).remainder(
        2 * math.pi).float()[None, :, None]
    delta = perturbation.delta(params)[0].double()
    n = torch.arange(samples, dtype=torch.float64)
    expected = a * torch.cos(2 * math.pi * k * (n + 512) / 1024)
    assert float((delta - expected)[1024:-1024].abs().max()) < 1e-6
    level = psd_db(delta[None].float(), sr)[0, 4:-4, k]
    assert torch.allclose(level, torch.tensor(96.0 + 20 * math.log10(a)), atol=0.01)


def test_leak_table_is_what_the_renderer_produces():
    """One synthesized component reads in the analysis cells around it as leak_db says."""
    sr, k = 44100, 100
    budget = _one_bin_budget(sr, sr // 2, k, 0.0)
    upper = torch.zeros_like(budget.upper)
    frame = budget.num_frames // 2
    upper[0, frame, k] = 0.5
    budget = MaskedSpectrumBudget(
        lower=upper.clone(), upper=upper, active=upper > 0, channel_rms=torch.ones(1),
        channel_weights=torch.ones(1), n_fft=1024, hop_length=512, sample_rate_hz=sr,
        num_samples=sr // 2, margin_db=0.0)
    delta = MaskedSpectrumPerturbation(budget).delta(MaskedSpectrumPerturbation(budget).init_params())
    level = psd_db(delta.detach(), sr)[0, frame - 1 : frame + 2, k - 4 : k + 5] - (96.0 + 20 * math.log10(0.5))
    table = leak_db(1024).float()
    finite = torch.isfinite(table)
    assert torch.allclose(level[finite], table[finite], atol=0.2)
    assert bool((level[~finite] < -40.0).all())


@pytest.mark.parametrize("sr", RATES)
def test_masked_spectrum_noise_stays_under_the_mask_at_its_maximum(sr):
    """The realized noise at the largest allowed magnitudes (initial random phases) on music
    (chords, noise bursts, silences): NMR p95 < 0 dB (with the default 6 dB margin ~ -2 dB);
    at the initial magnitudes far below. Mono and stereo, two phase seeds."""
    for channels in (1, 2):
        x = music(sr, channels=channels, seconds=2.0, seed=channels)
        mask = masking_threshold(x, sr)
        budget = masked_spectrum_budget(x, sr, masking=mask)
        for seed in (0, 1):
            perturbation = MaskedSpectrumPerturbation(budget, seed=seed)
            start = perturbation.init_params()
            top = nmr_summary(noise_to_mask_ratio(perturbation.delta(at_max(start)), mask))
            assert top["p95_db"] < -0.5, top
            assert top["mean_db"] < -6.0
            # at the start: magnitudes 5 % of the way up from the threshold in quiet
            init = perturbation.delta(start).detach()
            init_nmr = nmr_summary(noise_to_mask_ratio(init, mask))
            assert init_nmr["p95_db"] < top["p95_db"] - 4.0
            assert init_nmr["mean_db"] < top["mean_db"] - 10.0
            assert snr_db(x, init) > snr_db(x, perturbation.delta(at_max(start))) + 15.0
    # without the margin the same noise would be audible: the margin is doing the work
    loose = MaskedSpectrumPerturbation(masked_spectrum_budget(x, sr, masking=mask, margin_db=0.0))
    nmr = nmr_summary(noise_to_mask_ratio(loose.delta(at_max(loose.init_params())), mask))
    assert nmr["p95_db"] > 0.0


def test_dominant_tone_noise_stays_under_the_mask_at_its_maximum(stereo_music, make_music):
    """Chords with bursts and silences, and sparse notes (where a lone partial has the least
    room): the tones at their largest amplitudes keep NMR p95 < 0 dB."""
    x, sr, mask = stereo_music
    perturbation = DominantTonePerturbation(dominant_tone_budget(x, sr, masking=mask))
    delta = perturbation.delta(at_max(perturbation.init_params()))
    summary = nmr_summary(noise_to_mask_ratio(delta, mask))
    assert summary["p95_db"] < -3.0, summary
    assert 10.0 < snr_db(x, delta) < 30.0
    notes = torch.from_numpy(make_music(sr, 2, 3.0, seed=3))
    notes_mask = masking_threshold(notes, sr)
    sparse = DominantTonePerturbation(dominant_tone_budget(notes, sr, masking=notes_mask))
    delta = sparse.delta(at_max(sparse.init_params()))
    summary = nmr_summary(noise_to_mask_ratio(delta, notes_mask))
    assert summary["p95_db"] < -0.5, summary
    loose = DominantTonePerturbation(dominant_tone_budget(notes, sr, masking=notes_mask, margin_db=0.0))
    summary = nmr_summary(noise_to_mask_ratio(loose.delta(at_max(loose.init_params())), notes_mask))
    assert summary["p95_db"] > -2.0  # the margin is what keeps it under


def test_masked_spectrum_phases_are_seeded():
    x = music(44100, seconds=0.5)
    budget = masked_spectrum_budget(x, 44100)
    a, b = MaskedSpectrumPerturbation(budget, seed=7), MaskedSpectrumPerturbation(budget, seed=7)
    c = MaskedSpectrumPerturbation(budget, seed=8)
    pa, pb, pc = a.init_params(), b.init_params(), c.init_params()
    assert torch.equal(pa, pb) and torch.equal(a.delta(pa), b.delta(pb))
    assert not torch.equal(pa[1], pc[1]) and torch.equal(pa[0], pc[0])
    phases = pa[1].detach()
    assert float(phases.min()) >= -math.pi and float(phases.max()) < math.pi
    state = torch.get_rng_state()
    MaskedSpectrumPerturbation(budget, seed=7).init_params()
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never used


def test_masked_spectrum_needs_half_overlap():
    x = music(44100, seconds=0.3)
    mask = masking_threshold(x, 44100, hop_length=256)
    budget = masked_spectrum_budget(x, 44100, masking=mask)
    with pytest.raises(InputError, match=r"hop_length=256 with n_fft=1024.*default hop \(512\)"):
        MaskedSpectrumPerturbation(budget)


# --- the engine's contract -----------------------------------------------------------------


@pytest.fixture(scope="module")
def both_modes():
    sr = 44100
    x = music(sr, seconds=0.6, seed=5)
    mask = masking_threshold(x, sr)
    return x, sr, (DominantTonePerturbation(dominant_tone_budget(x, sr, masking=mask)),
                   MaskedSpectrumPerturbation(masked_spectrum_budget(x, sr, masking=mask)))


def test_delta_is_differentiable_in_the_parameters(both_modes):
    """Autograd matches central finite differences of <δ, r> for amplitude and phase
    parameters of active entries; inactive entries get exactly zero gradient."""
    x, _, modes = both_modes
    gen = torch.Generator().manual_seed(2)
    for perturbation in modes:
        r = torch.randn(x.shape, generator=gen)
        params = perturbation.init_params().detach().clone()
        params[0] = torch.randn(params[0].shape, generator=gen)
        params.requires_grad_(True)
        (grad,) = torch.autograd.grad((perturbation.delta(params) * r).sum(), params)
        active = perturbation.budget.active
        assert bool((grad[:, ~active] == 0).all())
        assert float(grad[0][active].abs().min()) >= 0 and float(grad[0][active].abs().max()) > 0
        idx = active.nonzero()
        picks = idx[torch.randperm(idx.shape[0], generator=gen)[:4]]
        for which in (0, 1):
            for cell in picks:
                position = (which, *cell.tolist())
                eps = 1e-2
                with torch.no_grad():
                    up, down = params.detach().clone(), params.detach().clone()
                    up[position] += eps
                    down[position] -= eps
                    numeric = ((perturbation.delta(up) - perturbation.delta(down)).double()
                               * r.double()).sum() / (2 * eps)
                analytic = float(grad[position])
                assert numeric.item() == pytest.approx(analytic, rel=0.03, abs=1e-6 + 0.03 * abs(analytic))


def test_apply_adds_clamps_broadcasts_and_leaves_the_input_alone(both_modes):
    x, _, modes = both_modes
    for perturbation in modes:
        params = at_max(perturbation.init_params()).requires_grad_(True)
        loud = (x * 2.5).clamp(-1.0, 1.0)
        before = loud.clone()
        out = perturbation.apply(loud, params)
        assert torch.equal(loud, before)
        assert float(out.detach().abs().max()) <= 1.0
        expected = (loud + perturbation.delta(params)).clamp(-1.0, 1.0)
        assert torch.equal(out, expected)
        batch = torch.stack([loud, loud * 0.5])
        out_batch = perturbation.apply(batch, params)
        assert out_batch.shape == batch.shape and torch.equal(out_batch[0], out)
        (grad,) = torch.autograd.grad(out_batch.sum(), params)
        assert bool(torch.isfinite(grad).all())
        with pytest.raises(InputError, match=r"\(2, 100\) does not match the budget's clip"):
            perturbation.apply(torch.zeros(2, 100), params)
        with pytest.raises(InputError, match=r"parameters of shape \(3,\).*init_params"):
            perturbation.delta(torch.zeros(3))


def test_deterministic_rendering(both_modes):
    _, _, modes = both_modes
    for perturbation in modes:
        p1, p2 = perturbation.init_params(), perturbation.init_params()
        assert torch.equal(p1, p2)
        assert torch.equal(perturbation.delta(p1), perturbation.delta(p2))


def test_step_scale_is_the_derivative_of_each_component(both_modes):
    """dδ/dparam: (upper - lower) σ'(p) for amplitudes, the current amplitude for phases,
    so a signed step of pgd_step / scale moves each component's amplitude by ~pgd_step."""
    _, _, modes = both_modes
    for perturbation in modes:
        params = perturbation.init_params()
        scale = perturbation.step_scale(params)
        assert scale.shape == params.shape and bool((scale > 0).all())
        amplitude = (perturbation.amplitudes if isinstance(perturbation, DominantTonePerturbation)
                     else perturbation.magnitudes)
        (d_amp,) = torch.autograd.grad(amplitude(params).sum(), params)
        active = perturbation.budget.active
        assert torch.allclose(scale[0][active], d_amp[0][active].clamp_min(1e-12), rtol=1e-5)
        with torch.no_grad():
            assert torch.allclose(scale[1][active], amplitude(params)[active].clamp_min(1e-12))
            pgd_step = 1e-6
            moved = params.detach().clone()
            moved[0] += pgd_step / scale[0]
            change = amplitude(moved) - amplitude(params)
        linear = active & (pgd_step / scale[0] < 0.05)  # small steps in logit units
        assert int(linear.sum()) > 100
        assert torch.allclose(change[linear], torch.tensor(pgd_step), rtol=0.05)


def test_regularizer_is_scale_free_and_weighted(both_modes):
    x, _, modes = both_modes
    for perturbation in modes:
        params = at_max(perturbation.init_params())
        delta = perturbation.delta(params)
        b = perturbation.budget
        expected = (b.channel_weights * delta.double().square().mean(-1).sqrt()
                    / x.double().square().mean(-1).sqrt()).mean()
        assert float(perturbation.regularizer(params)) == pytest.approx(float(expected), rel=1e-4)
        assert float(perturbation.delta_regularizer(delta)) == pytest.approx(float(expected), rel=1e-4)
    # mono: 10^(-SNR/20) exactly, whatever the level of the clip
    for gain in (1.0, 0.01):
        clean = torch.full((1, 1000), 0.5 * gain)
        noise = torch.full((1, 1000), 0.005 * gain)
        value = relative_rms_regularizer(noise, clean.square().mean(-1).sqrt(), torch.ones(1))
        assert float(value) == pytest.approx(10 ** (-40 / 20), rel=1e-4)


def test_initial_fraction_and_device_are_checked():
    budget = masked_spectrum_budget(music(44100, seconds=0.2), 44100)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(InputError, match=rf"initial_fraction={bad} must lie strictly"):
            MaskedSpectrumPerturbation(budget, initial_fraction=bad)
    auto = MaskedSpectrumPerturbation(budget, device="auto")
    assert auto.init_params().device.type == auto.device.type
    p = MaskedSpectrumPerturbation(budget, initial_fraction=0.5)
    mag = p.magnitudes(p.init_params())
    assert torch.allclose(mag, 0.5 * (budget.lower + budget.upper))


class _PullTarget:
    """A toy target: L_gen = mean squared distance of the batch from a fixed signal."""

    name = "pull"

    def __init__(self, goal: torch.Tensor) -> None:
        self.goal = goal

    def loss(self, x):
        return (x - self.goal).square().mean()

    def example_losses(self, x):
        with torch.no_grad():
            return (x - self.goal).square().flatten(1).mean(-1)

    def train_step(self, x):
        return float(self.loss(x))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        return None


@pytest.mark.parametrize("mode", ("tone", "spectrum"))
def test_the_engine_drives_both_modes(mode):
    """min_min with a toy target: the loss falls and δ stays inside the budget."""
    sr = 44100
    x = music(sr, channels=2, seconds=0.4, seed=6)
    if mode == "tone":
        budget = dominant_tone_budget(x, sr)
        perturbation = DominantTonePerturbation(budget)
        goal_params = at_max(perturbation.init_params())
    else:
        budget = masked_spectrum_budget(x, sr)
        perturbation = MaskedSpectrumPerturbation(budget)
        goal_params = at_max(MaskedSpectrumPerturbation(budget, seed=99).init_params())
    goal = (x + perturbation.delta(goal_params)).detach()
    target = _PullTarget(goal)
    settings = EngineSettings(outer_rounds=1, outer_steps=1, inner_steps=30, pgd_step=1e-3,
                              alpha=0.0, batch_size=1)
    start = float(target.loss(perturbation.apply(x, perturbation.init_params().detach())))
    result = min_min(x, perturbation, target, to_model=lambda v: v[None],
                     regularizer=perturbation.regularizer, settings=settings,
                     generator=torch.Generator().manual_seed(0))
    final = float(target.loss(perturbation.apply(x, result.params)))
    assert final < 0.5 * start
    if mode == "tone":
        amp = perturbation.amplitudes(result.params)
    else:
        amp = perturbation.magnitudes(result.params)
    assert bool((amp <= budget.upper + 1e-7).all()) and bool((amp >= budget.lower - 1e-7).all())


def test_long_input_memory_is_linear():
    """A minute of mono audio renders in both modes with autograd state ~ a few MB per second."""
    sr = 44100
    x = music(sr, channels=1, seconds=60.0, seed=7) * 0.5
    for perturbation, per_second_mb in (
        (DominantTonePerturbation(dominant_tone_budget(x, sr)), 2.0),
        (MaskedSpectrumPerturbation(masked_spectrum_budget(x, sr)), 3.0),
    ):
        params = perturbation.init_params()
        saved = [0]

        def pack(t, saved=saved):
            saved[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            delta = perturbation.delta(params)
        (grad,) = torch.autograd.grad(delta.square().sum(), params)
        assert delta.shape == x.shape and bool(torch.isfinite(grad).all())
        assert saved[0] / 60.0 / 1e6 < per_second_mb
