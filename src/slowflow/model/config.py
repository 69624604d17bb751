"""Model configuration: a frozen dataclass and the named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import ConfigError

FLOWS = ("maf", "nsf", "coupling", "gaussian")
ACTIVATIONS = ("tanh", "relu", "elu", "silu")
PARAMETRIZATIONS = ("direct", "increment")
DRIFTS = ("basis", "network")
SCALES = ("basis", "network")
INNOVATIONS = ("auto", "gaussian", "empirical")
#: Most past observations a map may be conditioned on.
MAX_MEMORY = 16


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the learned one-step map x_{n+1} = G(x_n, z).

    Attributes
    ----------
    flow:
        ``"maf"`` (masked autoregressive, affine), ``"nsf"`` (autoregressive
        rational-quadratic splines), ``"coupling"`` (spline coupling layers, sampled in one
        pass), or ``"gaussian"`` (no flow: the conditional Gaussian / Euler-Maruyama
        transition of a neural SDE, with a full Cholesky factor). ``ModelConfig()`` is the
        default preset (``get_preset()``): the Gaussian with its drift and covariance in
        closed form.
    transforms, hidden, activation, bins:
        Number of flow transforms (None: 0 for the Gaussian, 3 for a flow), hidden layer
        widths of each conditioner, its activation, spline bins.
    parametrization:
        ``"direct"``: the flow acts on x_{n+1} itself (the paper). ``"increment"``:
        x_{n+1} = x_n + mu + sd * (m(x_n) + L(x_n) u), with mu, sd the training increments'
        mean and std, (m, L) a conditional location and lower-triangular scale from a
        network, and u from the flow. The state-dependent scale lets one model cover
        kernels whose widths differ by orders of magnitude (multiplicative noise).
    standardize:
        Standardize the condition x_n with the training statistics.
    affine_hidden:
        Hidden widths of the (m, L) network (``"increment"`` only).
    drift:
        Where the conditional mean comes from (``"increment"`` only). ``"basis"``: a drift
        a(x) fitted in closed form by weighted least squares on a Legendre basis whose
        degree is chosen by cross-validation on whole trajectories
        (:mod:`slowflow.model.basis`); the location is then x + Delta a(x), and the
        network learns only the scale (the flow, the residual's shape). ``"network"``: the
        location is learned by the network with the likelihood (slowflow <= 0.1).
    basis_degree:
        Total degree of the drift basis; None chooses it from the data when fitting.
    scale:
        Where the conditional scale comes from (``drift="basis"`` only). ``"basis"``: the
        covariance Sigma(x) of the increments fitted in closed form on a Legendre basis
        (:mod:`slowflow.model.covariance`), L(x) its Cholesky factor; the Gaussian preset
        then has no trainable weights at all, and a flow shapes the standardized residual.
        ``"network"``: L(x) from the network, learned by likelihood. None: ``"basis"``
        with the basis drift, ``"network"`` otherwise.
    scale_degree:
        Total degree of the covariance basis; None chooses it from the data.
    memory:
        K, the number of past observations the map is conditioned on besides x_n:
        x_{n+1} = G(x_n, ..., x_{n-K}, z), a delay embedding (the finite-memory form of a
        Mori-Zwanzig closure) for data that are not Markov at Delta. 0: the paper's
        one-step map. With the closed-form covariance (the default) the memory is in the
        noise: drift and covariance see x_n, and the window's K standardized residuals
        drive an autoregression of the next one (:mod:`slowflow.model.residual_ar`); a
        flow on top also sees those residuals. With a network scale or drift, the drift
        and networks see the window through its coordinates (x_n, x_n - x_{n-1}, ...,
        x_{n-K+1} - x_{n-K}).
    periodic:
        Indices of the periodic variables (angles; their ranges are the data's, stored in
        the model): the map sees each through (cos, sin), its increments on the circle,
        and rollouts keep it in its range.
    innovation:
        The law of the standardized innovation u of the Gaussian presets (flow
        ``"gaussian"``; a flow learns its own). ``"gaussian"``: N(0, I). ``"empirical"``:
        the training innovations' own law near x_n, its mean and covariance held at 0 and
        I so that the drift and the covariance are kept (:mod:`slowflow.model.innovation`).
        ``"auto"`` (the default): the empirical law where it beats N(0, I) on the
        validation bursts' innovations, N(0, I) otherwise.
    """

    flow: str = "gaussian"
    transforms: int | None = None
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    bins: int = 8
    parametrization: str = "increment"
    standardize: bool = True
    affine_hidden: tuple[int, ...] = (64, 64)
    drift: str = "basis"
    basis_degree: int | None = None
    scale: str | None = None
    scale_degree: int | None = None
    memory: int = 0
    periodic: tuple[int, ...] = ()
    innovation: str = "auto"

    def __post_init__(self) -> None:
        if self.transforms is None:  # none for the Gaussian, three for a flow
            object.__setattr__(self, "transforms", 0 if self.flow == "gaussian" else 3)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "affine_hidden", tuple(int(h) for h in self.affine_hidden))
        if self.flow not in FLOWS:
            raise ConfigError(f"flow must be one of {FLOWS}, got {self.flow!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(
                f"parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}"
            )
        if self.flow == "gaussian" and self.parametrization != "increment":
            raise ConfigError("flow 'gaussian' needs parametrization 'increment'")
        if self.flow != "gaussian" and self.transforms < 1:
            raise ConfigError(f"transforms must be >= 1, got {self.transforms}")
        if any(h < 1 for h in self.hidden + self.affine_hidden):
            raise ConfigError("hidden layer widths must be >= 1")
        if self.bins < 2:
            raise ConfigError(f"bins must be >= 2, got {self.bins}")
        if self.drift not in DRIFTS:
            raise ConfigError(f"drift must be one of {DRIFTS}, got {self.drift!r}")
        if self.basis_degree is not None and (
            int(self.basis_degree) != self.basis_degree or not 0 <= self.basis_degree <= 12
        ):
            raise ConfigError(
                f"basis_degree must be an integer in 0..12, got {self.basis_degree!r}"
            )
        if (
            isinstance(self.memory, bool)
            or int(self.memory) != self.memory
            or not (0 <= self.memory <= MAX_MEMORY)
        ):
            raise ConfigError(f"memory must be an integer in 0..{MAX_MEMORY}, got {self.memory!r}")
        object.__setattr__(self, "memory", int(self.memory))
        per = tuple(sorted({int(i) for i in self.periodic}))
        if any(i < 0 for i in per):
            raise ConfigError(f"periodic must hold variable indices >= 0, got {self.periodic!r}")
        object.__setattr__(self, "periodic", per)
        if self.innovation not in INNOVATIONS:
            raise ConfigError(f"innovation must be one of {INNOVATIONS}, got {self.innovation!r}")
        if self.innovation == "empirical" and (
            self.flow != "gaussian" or self.parametrization != "increment"
        ):
            raise ConfigError(
                "innovation 'empirical' is for flow 'gaussian' (a flow learns the "
                "innovation's law itself)"
            )
        if self.scale is None:
            object.__setattr__(self, "scale", "basis" if self.uses_basis else "network")
        if self.scale not in SCALES:
            raise ConfigError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.scale == "basis" and not self.uses_basis:
            raise ConfigError(
                "scale 'basis' needs the basis drift (parametrization 'increment', drift "
                "'basis'): the covariance is fitted to the drift's residuals"
            )
        if self.scale_degree is not None and (
            int(self.scale_degree) != self.scale_degree or not 0 <= self.scale_degree <= 12
        ):
            raise ConfigError(
                f"scale_degree must be an integer in 0..12, got {self.scale_degree!r}"
            )

    @property
    def uses_basis(self) -> bool:
        """True when the conditional mean is the closed-form basis drift."""
        return self.parametrization == "increment" and self.drift == "basis"

    @property
    def uses_basis_scale(self) -> bool:
        """True when the conditional scale is the closed-form covariance."""
        return self.uses_basis and self.scale == "basis"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["affine_hidden"] = list(self.affine_hidden)
        d["periodic"] = list(self.periodic)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown model config field(s) {sorted(unknown)}")
        if "drift" not in d:  # files written before the basis drift learned the mean
            d = {**d, "drift": "network"}
        if "scale" not in d:  # files written before the closed-form covariance
            d = {**d, "scale": "network"}
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    # The paper's configuration (digest 2.2): conditional MAF, 5 affine transforms, one
    # conditioner of 2 hidden layers of 20 tanh units each, acting on x_{n+1} directly,
    # with no standardization.
    "paper": ModelConfig(
        flow="maf",
        transforms=5,
        hidden=(20, 20),
        activation="tanh",
        parametrization="direct",
        standardize=False,
        drift="network",
    ),
    "maf": ModelConfig(flow="maf", transforms=5, hidden=(64, 64)),
    "nsf": ModelConfig(flow="nsf", transforms=3, hidden=(64, 64), bins=8),
    "coupling": ModelConfig(flow="coupling", transforms=3, hidden=(64, 64), bins=8),
    # the default: drift and covariance in closed form, nothing to train
    "gaussian": ModelConfig(flow="gaussian", transforms=0),
    # the basis drift with a network scale learned by likelihood (the default of the
    # development versions before the closed-form covariance; kept for comparisons)
    "gaussian-net": ModelConfig(flow="gaussian", transforms=0, scale="network"),
    # slowflow 0.1's default: the same conditional Gaussian with the network's mean, for
    # drifts that no polynomial of modest degree follows (and for comparisons)
    "network": ModelConfig(flow="gaussian", transforms=0, drift="network"),
}
DEFAULT_PRESET = "gaussian"


def get_preset(name: str | None = None, **overrides) -> ModelConfig:
    """A named preset (``None`` -> the default), optionally with fields replaced."""
    key = DEFAULT_PRESET if name in (None, "default") else str(name).lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; available: default, {', '.join(PRESETS)}")
    return replace(PRESETS[key], **overrides) if overrides else PRESETS[key]
