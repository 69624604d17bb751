"""The flow-map contract over every preset and d in (1, 2), and safe model files.

``model(x)`` must be a torch Distribution over x_{n+1} with the right shapes, trainable in
every parameter, free of train/eval differences, and must survive save/load bit for bit.
``load_model`` must refuse anything that is not an intact slowflow model file with a
one-line :class:`ModelFileError` naming the path, without ever running code from the file.
"""

from __future__ import annotations

import os
import shlex

import numpy as np
import pytest
import torch
from torch import nn

from slowflow.errors import ModelFileError
from slowflow.model.config import PRESETS, get_preset
from slowflow.model.flowmap import FlowMap, build_model
from slowflow.model.io import FORMAT, load_model, model_payload, save_model
from slowflow.model.score import sample_with as _sample
from slowflow.rollout import predict

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DT = 0.01
N = 64
CASES = [pytest.param(p, d, id=f"{p}-d{d}") for p in sorted(PRESETS) for d in (1, 2)]
# presets with weights to train (the closed-form 'gaussian' has none)
TRAINED = [c for c in CASES if c.values[0] != "gaussian"]


def _perturb_zero_parameters(model: nn.Module, scale: float = 0.05, seed: int = 1) -> list[str]:
    """Move every all-zero parameter (the zero-initialised output layers that make the flow
    start at the identity) off zero, so gradients reach the layers before it and the model
    is not trivially the identity. Returns the names of the perturbed parameters."""
    gen = torch.Generator().manual_seed(seed)
    moved = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not bool(p.abs().sum() > 0):
                p.add_(scale * torch.randn(p.shape, generator=gen))
                moved.append(name)
    return moved


def _model(preset: str, d: int, perturb: bool = True) -> FlowMap:
    """A fresh model with non-trivial standardization statistics (so that they matter)."""
    torch.manual_seed(0)
    model = build_model(get_preset(preset), d, dt=DT)
    model.set_statistics(
        x_mean=np.linspace(1.0, 1.5, d),
        x_std=np.linspace(0.5, 0.8, d),
        d_mean=np.linspace(-0.01, 0.01, d),
        d_std=np.linspace(0.03, 0.05, d),
    )
    if perturb:
        _perturb_zero_parameters(model)
    return model


def _points(d: int, n: int = N, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditions x_n around the standardization mean and nearby targets x_{n+1}."""
    gen = torch.Generator().manual_seed(seed)
    x = 1.2 + 0.5 * torch.randn(n, d, generator=gen)
    y = x + 0.04 * torch.randn(n, d, generator=gen)
    return x, y


@pytest.mark.parametrize(("preset", "d"), CASES)
def test_model_returns_distribution_with_shapes(preset, d):
    """``model(x)`` is a torch Distribution: ``sample()`` is (n, d), ``log_prob`` is (n,),
    both finite (exact shape checks, no tolerance)."""
    model = _model(preset, d)
    x, y = _points(d)
    dist = model(x)
    assert isinstance(dist, torch.distributions.Distribution)
    s = dist.sample()
    assert s.shape == (N, d)
    lp = dist.log_prob(y)
    assert lp.shape == (N,)
    assert torch.isfinite(s).all() and torch.isfinite(lp).all()
    assert dist.log_prob(s).shape == (N,)
    assert model(x[:1]).sample().shape == (1, d)


@pytest.mark.parametrize(("preset", "d"), TRAINED)
def test_gradients_reach_every_parameter(preset, d):
    """The mean log-likelihood has a gradient (not None) for every parameter of a fresh
    model; after moving the zero-initialised output layers off zero, every parameter
    tensor gets a gradient with a nonzero entry (exact: any nonzero float counts)."""
    model = _model(preset, d, perturb=False)
    x, y = _points(d)
    model(x).log_prob(y).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"

    model.zero_grad(set_to_none=True)
    _perturb_zero_parameters(model)
    model(x).log_prob(y).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"zero gradient for {dead}"


@pytest.mark.parametrize("d", (1, 2, 3))
def test_closed_form_gaussian_is_the_exact_normal_law_of_its_fits(d):
    """The default preset has no weights; its law at x is N(x + Delta a(x), Delta Sigma(x))
    with a and Sigma the stored fits: log_prob equals scipy's multivariate normal density
    (float32 against float64: 1e-4 nats)."""
    from scipy import stats

    from slowflow.model.basis import DriftFit
    from slowflow.model.covariance import CovarianceFit

    rng = np.random.default_rng(d)
    lo, hi = -np.ones(d), np.ones(d)
    p1 = 1 + d  # degree-1 features: (1, x_1, ..., x_d) on the box [-1, 1]
    drift = DriftFit(lo, hi, 1, rng.normal(size=(p1, d)), np.zeros((d, p1, p1)))
    a = rng.normal(size=(d, d))
    m = d * (d + 1) // 2
    coef = np.zeros((p1, m))
    rows, cols = np.triu_indices(d)
    coef[0] = (a @ a.T + d * np.eye(d))[rows, cols]  # a constant, positive definite Sigma
    cov = CovarianceFit(lo, hi, 1, coef, np.ones(d))
    model = build_model(get_preset("gaussian"), d, DT, drift, cov)
    assert model.n_parameters() == 0
    x = rng.uniform(-0.9, 0.9, size=(5, d))
    y = x + 0.1 * rng.normal(size=(5, d))
    got = model(torch.as_tensor(x, dtype=torch.float32)).log_prob(
        torch.as_tensor(y, dtype=torch.float32)
    )
    sig = (a @ a.T + d * np.eye(d)) * DT
    want = [
        stats.multivariate_normal(x[i] + DT * drift.drift(x[i : i + 1])[0], sig).logpdf(y[i])
        for i in range(5)
    ]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("preset", "d"), CASES)
def test_eval_mode_equals_train_mode(preset, d):
    """No dropout or batch norm: train and eval mode give bit-identical log_prob and, with
    the same generator, bit-identical samples (exact equality)."""
    model = _model(preset, d)
    banned = (nn.Dropout, nn.modules.batchnorm._BatchNorm, nn.AlphaDropout)
    assert not [m for m in model.modules() if isinstance(m, banned)]
    x, y = _points(d)
    out = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        with torch.no_grad():
            out[mode] = (model(x).log_prob(y), _sample(model(x), torch.Generator().manual_seed(5)))
    assert torch.equal(out["train"][0], out["eval"][0])
    assert torch.equal(out["train"][1], out["eval"][1])


@pytest.mark.parametrize(("preset", "d"), CASES)
def test_save_load_round_trip(preset, d, tmp_path):
    """save_model/load_model keeps weights, buffers, config and dt: rollouts with the same
    seed and log_prob are bit-identical (exact equality, float32 on CPU both sides)."""
    model = _model(preset, d)
    path = save_model(model, tmp_path / "model.pt", meta={"note": "round trip"})
    loaded = load_model(path)
    assert isinstance(loaded, FlowMap)
    assert loaded.config == model.config
    assert loaded.dim == d
    assert float(loaded.dt) == DT
    assert loaded.meta["note"] == "round trip"
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    x0 = np.linspace(0.9, 1.4, d)
    paths = predict(model, x0, n_steps=5, n_paths=32, seed=3)
    again = predict(loaded, x0, n_steps=5, n_paths=32, seed=3)
    assert paths.shape == (32, 6, d)
    assert np.isfinite(paths).all()
    np.testing.assert_array_equal(paths, again)
    assert not np.array_equal(paths, predict(loaded, x0, n_steps=5, n_paths=32, seed=4))

    x, y = _points(d)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).log_prob(y), loaded(x).log_prob(y))


def test_paper_preset_has_the_authors_parameter_count():
    """The paper preset at d=1 is the authors' conditional MAF: 5 transforms, each with a
    [1 -> 20 -> 20 -> 2] tanh MLP, i.e. 5 * (40 + 420 + 42) = 2510 parameters (exact)."""
    model = build_model(get_preset("paper"), 1, dt=DT)
    assert model.n_parameters() == 2510
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2510
    weights = [tuple(p.shape) for n, p in model.named_parameters() if n.endswith("weight")]
    assert weights == [(20, 1), (20, 20), (2, 20)] * 5
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 10


# ------------------------------------------------------------------------- refused files


class _RunsCode:
    """Pickles to a call of os.system: unpickling it would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _write_bad_file(kind: str, tmp_path) -> object:
    path = tmp_path / f"{kind}.pt"
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        good = save_model(_model("paper", 1), tmp_path / "good.pt")
        raw = good.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "no_format_marker":
        torch.save({"state_dict": _model("paper", 1).state_dict(), "dim": 1}, path)
    elif kind == "wrong_format_marker":
        payload = model_payload(_model("paper", 1))
        payload["format"] = "something-else"
        torch.save(payload, path)
    elif kind == "newer_format":
        payload = model_payload(_model("paper", 1))
        payload["format_version"] = 999
        torch.save(payload, path)
    elif kind == "config_mismatch":
        payload = model_payload(_model("paper", 1))
        payload["dim"] = 2  # weights are for d=1
        torch.save(payload, path)
    elif kind == "directory":
        path.mkdir()
    else:  # pragma: no cover
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "empty",
        "truncated",
        "random_bytes",
        "no_format_marker",
        "wrong_format_marker",
        "newer_format",
        "config_mismatch",
        "directory",
    ],
)
def test_load_model_refuses_bad_files(kind, tmp_path):
    """Every bad file gives a ModelFileError whose message is one line naming the path."""
    path = _write_bad_file(kind, tmp_path)
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    if kind in ("no_format_marker", "wrong_format_marker"):
        assert FORMAT in msg
    if kind == "newer_format":
        assert "999" in msg and "newer" in msg


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "inside-model-payload"])
def test_load_model_never_runs_code_from_the_file(wrapped, tmp_path):
    """A pickle whose loading would run ``touch SENTINEL`` is refused and the sentinel is not
    created. Control: unpickling it unsafely does create the sentinel, so the payload is live
    and the negative check is meaningful."""
    sentinel = tmp_path / "SENTINEL"
    evil = _RunsCode(f"touch {shlex.quote(str(sentinel))}")
    path = tmp_path / "evil.pt"
    if wrapped:
        payload = model_payload(_model("paper", 1))
        payload["meta"] = {"x": evil}
        torch.save(payload, path)
    else:
        torch.save(evil, path)
    assert not sentinel.exists()

    with pytest.raises(ModelFileError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert not sentinel.exists(), "load_model executed code embedded in the model file"

    torch.load(path, weights_only=False)  # the unsafe way, on purpose
    assert sentinel.exists()
