"""``--plot``: one panel per charted suite (fault, walk, relocate, concurrent), each goal a red
dashed line, the 95 % intervals as error bars, the verdict in the panel's title.  matplotlib is
optional (the ``plot`` extra) and imported only here, when asked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ptreloc.bench.plan import DEFAULT_BATCH, GIB, MIB, check_writable
from ptreloc.errors import UsageError

__all__ = ["PLOT_FORMATS", "PlotUnavailable", "check_plot_path", "plot", "require_matplotlib"]


class PlotUnavailable(UsageError):
    """--plot without matplotlib."""


def require_matplotlib() -> None:
    """Raise PlotUnavailable (exit 2) when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'ptreloc[plot]' "
            "(or drop --plot)"
        ) from err


#: What --plot draws, by file name extension: formats matplotlib's Agg/SVG/PDF backends write
#: without external tools (no LaTeX, no ghostscript), so a run never fails at the last step.
PLOT_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


def check_plot_path(path: str | os.PathLike[str]) -> str:
    """Everything --plot needs, checked BEFORE measuring: matplotlib importable, a file name
    whose extension is one of :data:`PLOT_FORMATS` (matplotlib picks the format from it, and an
    unknown one is a ValueError only when the figure is saved - after the whole run), and a
    writable place.  Returns the format; raises UsageError (exit 2) otherwise."""
    require_matplotlib()
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        what = f"a '.{fmt}' file" if fmt else "a file without an extension"
        raise UsageError(f"--plot {os.fspath(path)}: cannot draw {what}; name it "
                         f"{', '.join('.' + f for f in PLOT_FORMATS[:-1])} or "
                         f".{PLOT_FORMATS[-1]}")
    check_writable(path, "--plot")
    return fmt


def _goal_of(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((g for g in results.get("goals", []) if g["key"] == key), None)


def _verdict(g: dict[str, Any] | None) -> str:
    if g is None:
        return ""
    return {"met": "goal met", "missed": "goal MISSED"}.get(
        g.get("verdict", ""), "goal undecided (interval too wide)")


def _size_label(nbytes: int) -> str:
    return f"{nbytes // GIB} GiB" if nbytes >= GIB else f"{nbytes // MIB} MiB"


def plot(results: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a summary of ``results`` (PNG, SVG or PDF by ``path``'s extension, see
    :func:`check_plot_path`): one panel per suite that ran (fault, walk, relocate,
    concurrent), each with its goal drawn as a red dashed line, values written on the bars, the
    95 % intervals as error bars, and whether the goal was met in the panel's title."""
    fmt = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [s for s in ("fault", "walk", "relocate", "concurrent") if s in results]
    n = max(1, len(panels))
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    fig, axes_grid = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.6 * rows), squeeze=False)
    axes = [ax for row in axes_grid for ax in row]
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no suite with a chart ran: mirror and migrate are reported in "
                     "the tables and the JSON", ha="center", va="center", wrap=True)
    goal_style = {"ls": "--", "color": "tab:red", "lw": 1.4}
    for ax, name in zip(axes, panels, strict=False):
        r = results[name]
        if name == "fault":
            variants = ("bare", "with_data")
            vs = [r[v]["overhead_pct"] for v in variants]
            lo = [v - r[k]["ci95_pct"][0] for v, k in zip(vs, variants, strict=True)]
            hi = [r[k]["ci95_pct"][1] - v for v, k in zip(vs, variants, strict=True)]
            xs: list[float] = list(range(len(variants)))
            ax.bar(xs, vs, yerr=[lo, hi], capsize=8, color=["tab:blue", "tab:orange"],
                   width=0.5, label="median of paired rounds, 95 % CI")
            goal_label = "goal: " + ", ".join(
                f"{k} <= {g['target']} %" for k in variants
                if (g := _goal_of(results, f"fault.{k}.overhead_pct")))
            for x, v, k in zip(xs, vs, variants, strict=True):
                g = _goal_of(results, f"fault.{k}.overhead_pct")
                if g:
                    ax.hlines(g["target"], x - 0.35, x + 0.35,
                              label=goal_label if x == 0 else None, **goal_style)
                ax.annotate(f"{v:+.2f} %", (x + 0.25, v), xytext=(4, 0),
                            textcoords="offset points", fontsize=9, fontweight="bold",
                            va="center")
            ax.axhline(1.6, ls=":", color="grey", label="RFC lmbench lat_pagefault: 1.6 %")
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(list(xs), [f"{k}\n{r[k]['ns_per_fault']['relo']} ns/fault"
                                     for k in variants])
            ax.set_ylabel("slowdown of the relocation build (%)")
            verdicts = ", ".join(f"{k} {_verdict(_goal_of(results, f'fault.{k}.overhead_pct'))}"
                                 for k in variants)
            ax.set_title(f"fault: cost of relocation support on the fault path\n{verdicts}",
                         loc="left", fontsize=10)
        elif name == "walk":
            labels = ["local tables"]
            vals = [r["local"]["ratio_vs_chase"]]
            cis = [r["local"].get("ci95") or r.get("ci95")]
            if not r["remote"].get("skipped"):
                labels.append("remote tables")
                vals.append(r["remote"]["ratio_vs_chase"])
                cis.append(r["remote"].get("ci95"))
            lo = [v - (c[0] if c else v) for v, c in zip(vals, cis, strict=True)]
            hi = [(c[1] if c else v) - v for v, c in zip(vals, cis, strict=True)]
            ax.bar(labels, vals, yerr=[lo, hi], capsize=8, color="tab:green", width=0.4,
                   label="median ratio, 95 % CI")
            for x, v in enumerate(vals):  # right of the bar: clear of the error bar
                ax.annotate(f"{v:.2f}x", (x + 0.2, v), xytext=(3, 0), textcoords="offset points",
                            fontsize=9, fontweight="bold", va="center")
            ax.axhline(1.5, label="goal (<= 1.5x)", **goal_style)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_xlim(-0.8, len(labels) - 0.2)
            ax.set_ylabel("TLB-miss walk time / bare pointer chase (x)")
            ax.set_title("walk: emulated TLB-miss walk vs a bare dependent chase\n"
                         f"{_verdict(_goal_of(results, 'walk.ratio_vs_chase'))}",
                         loc="left", fontsize=10)
        elif name == "relocate":
            sizes = r["sizes"]
            xs = [s["mapped_bytes"] / MIB for s in sizes]
            ax.semilogx(xs, [s["ratio_vs_memcpy"] for s in sizes], "o-", color="tab:purple",
                        label="relocation (no poisoning)")
            if all(s.get("poisoned") for s in sizes):
                ax.semilogx(xs, [s["poisoned"]["ratio_vs_memcpy"] for s in sizes], "s--",
                            color="tab:purple", alpha=0.5, label="with freed-frame poisoning")
            for s, x in zip(sizes, xs, strict=True):
                ax.annotate(f"{s['ratio_vs_memcpy']:.1f}x\n{s['frames']} tables", (x, s[
                            "ratio_vs_memcpy"]), xytext=(4, 6), textcoords="offset points",
                            fontsize=8)
            ax.axhline(1.5, label="goal (<= 1.5x memcpy)", **goal_style)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_ylim(bottom=0)
            ax.set_xticks(xs, [_size_label(s["mapped_bytes"]) for s in sizes])
            ax.set_xlim(xs[0] / 2, xs[-1] * 5)  # room for the last label
            ax.minorticks_off()
            ax.set_xlabel("address space mapped (log scale)")
            ax.set_ylabel("relocation time / memcpy of the same tables (x)")
            ax.set_title(f"relocate: per-table cost vs memcpy; "
                         f"{_verdict(_goal_of(results, 'relocate.ratio_vs_memcpy'))}\n"
                         f"growth exponent {r['growth_exponent']} (goal <= 1.1: "
                         f"{_verdict(_goal_of(results, 'relocate.growth_exponent'))})",
                         loc="left", fontsize=10)
        else:
            bars = [(f"rewalk\nbatch {b}", v) for b, v in r["rewalk"]["by_batch"].items()]
            bars.append((f"stop\nbatch {r['stop'].get('batch', '')}", r["stop"]))
            vals = [v["p99_ratio"] for _, v in bars]
            rng = [v.get("p99_ratio_range") or [v["p99_ratio"]] * 2 for _, v in bars]
            lo = [max(0.0, v - g[0]) for v, g in zip(vals, rng, strict=True)]
            hi = [max(0.0, g[1] - v) for v, g in zip(vals, rng, strict=True)]
            colors = ["tab:red" if "rewalk" in k else "tab:gray" for k, _ in bars]
            ax.bar([k for k, _ in bars], vals, yerr=[lo, hi], capsize=6, color=colors,
                   alpha=0.8, width=0.6, label="median over rounds (bars: per-round range)")
            for x, v in enumerate(vals):
                ax.annotate(f"{v:.2f}", (x + 0.3, v), xytext=(2, 0), textcoords="offset points",
                            fontsize=9, fontweight="bold", va="center")
            ax.axhline(2.0, label="goal for rewalk (<= 2.0)", **goal_style)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_ylabel("p99 access latency: relocating / idle (x)")
            ax.set_title("concurrent: CPU access tail while tables are relocated\n"
                         f"rewalk (batch {DEFAULT_BATCH}) "
                         f"{_verdict(_goal_of(results, 'concurrent.rewalk.p99_ratio'))}",
                         loc="left", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.2)
        ax.legend(fontsize=8, loc="upper right" if name == "relocate" else "best",
                  framealpha=0.9)
    meta = results.get("meta", {})
    kind = ("QUICK run (CI smoke: checks the shape, not the speed - do not read the figures)"
            if meta.get("quick") else "full run")
    fig.suptitle(f"ptreloc bench {meta.get('version', '')} - {kind}\n"
                 f"{meta.get('started', '')}, seed {meta.get('seed', '')}, "
                 f"{meta.get('cpus', '?')} CPUs, nodes with memory "
                 f"{meta.get('nodes_with_memory', '?')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=fmt)
    plt.close(fig)
