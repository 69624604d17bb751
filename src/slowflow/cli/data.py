"""``slowflow systems`` and ``slowflow simulate``: the built-in systems and their ground truth."""

from __future__ import annotations

from ..errors import ConfigError
from .options import check_out, command_line, finite, floats, integer, seed


def cmd_systems(args) -> int:
    from ..systems import list_systems

    rows = [("name", "alias", "slow", "fast", "eps", "source")]
    for s in list_systems():
        eps = "-" if s.eps is None else f"{s.eps:.4g}"
        aliases = ",".join(s.aliases) or "-"
        rows.append((s.name, aliases, str(s.slow_dim), str(s.fast_dim), eps, s.param_source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_simulate(args) -> int:
    from ..data import save_trajectories
    from ..simulate import simulate_bursts, simulate_ensemble
    from ..systems import get_system

    system = get_system(args.system)
    check_out(args.out, (".npz", ".csv"))
    if args.x0 is not None and args.n_traj is not None:
        raise ConfigError(
            "give either --n-traj (training bursts) or --x0 (test ensemble), not both"
        )
    common = dict(
        dt_obs=args.dt_obs, substeps=args.substeps, seed=args.seed, keep_fast=args.keep_fast
    )
    if args.x0 is not None:
        x0 = floats(args.x0)
        if len(x0) != system.slow_dim:
            raise ConfigError(
                f"--x0 has {len(x0)} value(s) but {system.name} has "
                f"{system.slow_dim} slow variable(s)"
            )
        data = simulate_ensemble(system, x0, n_paths=args.n_paths, t_end=args.t_end, **common)
    else:
        data = simulate_bursts(system, n_traj=args.n_traj, t_end=args.t_end, **common)
    data.meta["command"] = command_line()
    save_trajectories(data, args.out)
    print(
        f"wrote {args.out}: {data.n_traj} trajectories x {data.n_obs} observations x "
        f"d={data.dim}, dt={data.dt:g} ({data.meta.get('seconds', 0):.1f} s)"
    )
    return 0


def register(sub) -> None:
    s = sub.add_parser("systems", help="list the built-in benchmark systems")
    s.set_defaults(func=cmd_systems)

    s = sub.add_parser("simulate", help="simulate training bursts or a test ensemble")
    s.add_argument("system", help="system name or alias (see `slowflow systems`)")
    s.add_argument("--out", required=True, help="output file (.npz or .csv)")
    s.add_argument(
        "--n-traj",
        type=integer,
        default=None,
        help="training bursts from uniform starts in the system's box (default 10000)",
    )
    s.add_argument("--x0", default=None, help="test ensemble from this slow start, e.g. 1.5,1.0")
    s.add_argument("--n-paths", type=integer, default=10_000, help="paths of a test ensemble")
    s.add_argument(
        "--t-end",
        type=finite,
        default=None,
        help="duration (default: 1 for bursts, the paper's horizon for ensembles)",
    )
    s.add_argument("--dt-obs", type=finite, default=None, help="observation step (default 0.01)")
    s.add_argument(
        "--substeps",
        type=integer,
        default=None,
        help="Euler-Maruyama substeps per observation (default: dt = 1e-4)",
    )
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument("--keep-fast", action="store_true", help="also store the fast variables")
    s.set_defaults(func=cmd_simulate)
