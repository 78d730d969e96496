"""The microcontroller section of report.md (and of mcu-TARGET.md): per head, fit or why not."""

from __future__ import annotations


def render_mcu(summary: dict) -> list[str]:
    """Markdown lines for a report: per head, fit or the reason it does not fit."""
    lines = [f"## Microcontroller profile on {summary['target']}", "",
             f"{summary['mode']}; {summary['n_inputs']} validation inputs, "
             f"{summary['sessions']} session(s); cycles = instructions x CPI {summary['cpi']} "
             f"at {summary['clock_hz'] / 1e6:g} MHz ({summary['calibration_source']}).", "",
             "| candidate | fits | blob bytes | flash needed / limit | int8 acc | float acc | "
             "instructions (median) | est. latency ms | emulated |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["candidates"]:
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.1f}%"

        instr = r.get("instructions_median")
        lat = r.get("est_latency_ms_median")
        lines.append(
            f"| {r['id']} ({r['description']}) | {'yes' if r['feasible'] else 'no'} | "
            f"{r['blob_bytes']} | {r['flash_needed_bytes']} / {r['flash_limit_bytes'] or '-'} | "
            f"{pct(r.get('int8_acc'))} | {pct(r.get('float_acc'))} | "
            f"{'n/a' if instr is None else f'{instr:.0f}'} | "
            f"{'n/a' if lat is None else f'{lat:.3f}'} | {r.get('emulated', '')} |")
    bad = [r for r in summary["candidates"] if not r["feasible"]]
    if bad:
        lines += ["", "Infeasible on this target:", ""]
        lines += [f"- {r['id']}: {r['reason']}" for r in bad]
    return lines + [""]
