"""The molecular example at full size: alanine dipeptide MD, slowflow and an MSM.

Runs :func:`slowflow.md.study.reproduce_alanine` (about 35 ns of OpenMM dynamics on two
worker processes, then the models and the comparison; needs ``pip install slowflow[md]``)
into ``--out`` (default ``benchmarks/results/alanine_run``; the MD is cached there, so a
rerun only redoes the analysis), copies its ``metrics.json`` to ``--results`` as
``alanine.json`` with the machine's facts, and with ``--write-docs`` writes the tables to
``docs/benchmarks/alanine.md``. Run on a quiet machine: the MD speed is part of the result.

Usage::

    python benchmarks/alanine.py [--out DIR] [--write-docs] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from _common import RESULTS, machine, write_json


def _f(v, spec=".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def page(r: dict, m: dict, command: str) -> str:
    md, ref = r["md"], r["md_reference"]
    sweep = "\n".join(
        f"| {s['delta_ps']:g} | {'yes' if s['calibrated'] else 'no'} | "
        f"{', '.join(f'{v:.3f}' for v in s['dispersion'])} | {', '.join(f'{v:.3f}' for v in s['bias'])} |"
        for s in r["delta_sweep"]
    )
    rows = []
    for name, row in r["comparison"].items():
        p, e = row["populations"], row["population_rel_error"]
        within = row.get("populations_in_md_ci", {})

        def inside(b, within=within):
            return ", in MD's CI" if within.get(b) else ""

        rows.append(
            f"| {name} | {_f(row['fes_rms_kT'])} | {p['beta']:.3f} ({_f(e['beta'], '+.0%')}{inside('beta')}) | "
            f"{p['alpha_R']:.3f} ({_f(e['alpha_R'], '+.0%')}{inside('alpha_R')}) | {p['alpha_L']:.4f} "
            f"({_f(e['alpha_L'], '+.0%')}{inside('alpha_L')}) | "
            + " | ".join(
                f"{_f(row['relaxation_ps'][b], '.1f')} ({'in' if row['relaxation_in_md_ci'][b] else 'outside'})"
                for b in ("alpha_R", "alpha_L")
            )
            + " |"
        )
    relax = []
    for label, rel in r["relaxation"].items():
        for name, v in rel["time_avg_w1_where_msm_defined"].items():
            allt = rel["time_avg_w1"].get(name)
            relax.append(
                f"| {label} {tuple(round(x, 2) for x in rel['x0'])} | {name} | "
                f"{', '.join(f'{c:.3f}' for c in v) if v else '-'} | "
                f"{', '.join(f'{c:.3f}' for c in allt) if allt else '- (lag only)'} |"
            )
    ci = ref.get("populations_ci95", {})
    pops_md = ", ".join(
        f"{b} {ref['populations'][b]:.3f}"
        + (f" ({ci[b][0]:.3f}-{ci[b][1]:.3f})" if b in ci else "")
        for b in ("beta", "alpha_R", "alpha_L")
    )
    md_tau = ", ".join(
        f"{b} {_f(ref['relaxation_ps'][b], '.1f')} ps ({_f(ref['relaxation_ci95'][b][0], '.1f')}-"
        f"{_f(ref['relaxation_ci95'][b][1], '.1f')})"
        for b in ("alpha_R", "alpha_L")
    )
    its = r["msm"]["implied_timescales_ps"]
    its_line = "; ".join(
        f"lag {k} ps: {', '.join(f'{t:.0f}' for t in v)} ps" for k, v in its.items()
    )
    return f"""# Alanine dipeptide: MD, slowflow and an MSM

Measured {m["date"][:10]} at commit {m["commit"]} (`{command}`), {m["cpu_count"]} CPU
cores. What runs and how each number is defined: [Molecular dynamics](../guide/molecular.md).
The run writes `free_energy.png` (the surfaces of MD, slowflow and the MSM side by side),
`relaxation.png` and `implied_timescales.png` next to its `report.md`.

## Cost

MD: {md["ns"]:.1f} ns in {md["seconds"] / 60:.1f} min, {md["ns_per_day"]:.0f} ns/day on
{md["workers"]} worker processes (OpenMM CPU platform, one thread each, {md["md"]["timestep_fs"]:g} fs
with hydrogen masses of {md["md"]["hydrogen_mass"]} amu). The whole study, MD included:
{r["seconds"] / 60:.1f} min.

## The observation step

The closed-form map fitted at each Δ on 80 % of the bursts, checked on the rest
(`check` flags 12 Var(PIT) outside 0.90..1.12 or a PIT bias above 0.03, beyond 3 standard errors):

| Δ (ps) | calibrated | max abs(12 Var(PIT) - 1) (phi, psi) | max abs(PIT bias) |
|---|---|---|---|
{sweep}

Chosen: Δ = {r["delta_ps"]:g} ps; the memory chosen there: {r["memory_chosen"]}.
MSM: {r["msm"]["n_states"]} states on a {r["msm"]["bins"]} x {r["msm"]["bins"]} grid, lag
{r["msm"]["lag_ps"]:g} ps (implied timescales: {its_line}).

## Stationary law and slowest relaxation

MD reference ({ref["frames"]:,} frames of the long runs): populations {pops_md}
(95 % block-bootstrap intervals, blocks of 1 ns); relaxation times of the milestoned
basins (the lag at which the autocorrelation of "last core visited is the basin" falls to
1/e; cores: 0.5 rad around each basin's most visited point): {md_tau}
(95 % block-bootstrap intervals, {ref["bootstrap_blocks"]} blocks).

| source | FES RMS vs MD (kT, cells >= 1 % mass) | beta (rel. error) | alpha_R | alpha_L | alpha_R relaxation (ps, MD's 95 % interval) | alpha_L relaxation (ps, MD's 95 % interval) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## Relaxation from fixed starts

Time-averaged W1 on the circle (rad) to the {r["config"]["fixed_runs"]}-run MD ensemble, per dihedral, over the
times where the MSM is defined (multiples of its lag), and over every Δ (the MSM has no
value between its lags):

| start (phi, psi) | source | at the MSM's times | at every Δ |
|---|---|---|---|
{chr(10).join(relax)}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / "alanine_run"))
    ap.add_argument("--results", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    from slowflow.md.study import reproduce_alanine

    t0 = time.perf_counter()
    r = reproduce_alanine(args.out, quick=args.quick)
    m = machine()
    path = write_json(
        "alanine", {"machine": m, "seconds": time.perf_counter() - t0, **r}, args.results
    )
    print(f"wrote {path}")
    if args.write_docs:
        doc = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "alanine.md"
        command = "python benchmarks/alanine.py" + (" --quick" if args.quick else "")
        doc.write_text(page(r, m, command), encoding="utf-8")
        print(f"wrote {doc}")


if __name__ == "__main__":
    main()
