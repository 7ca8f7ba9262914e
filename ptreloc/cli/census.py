"""``ptreloc census``: what pins memory per node, page tables first (/proc/kpageflags)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from ptreloc import census as census_mod
from ptreloc.cli._common import emit_json, guarded, json_option, stderr_console, stdout_console

__all__ = ["command", "plot"]

_PAGE_KINDS = ("pagetable", "pagetable_unmarked", "slab", "reserved", "kernel_other", "free",
               "movable", "offline", "hole")


@click.command("census", epilog="""\b
Examples:
  ptreloc census
  ptreloc census --node 1 --by-process
  ptreloc census --json | jq '.ranking, .per_node[].pagetables_check'
  ptreloc census --plot pinned.png
\b
Exit codes: 0 done, 1 not root / /proc/kpageflags unreadable / --by-process without the kernel
walk, 2 usage error (malformed, missing or offline node; a --plot file that is not
.png/.svg/.pdf, or --plot without matplotlib).""")
@click.option("--node", "nodes", metavar="LIST",
              help="Nodes to count, numactl syntax (0, 0-1, all; default: every online node "
              "with memory).")
@click.option("--by-process", "by_process", is_flag=True,
              help="Attribute the page-table frames to processes with the kernel walk (root, "
              "/proc/kcore): which processes' tables pin which memory blocks.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also draw the pinned pageblocks per node by kind to FILE.png/.svg/.pdf "
              "(needs the 'plot' extra: matplotlib).")
@json_option
@guarded
def command(nodes: str | None, by_process: bool, plot_path: str | None, as_json: bool) -> None:
    """Count, per NUMA node, the pages and pageblocks that page tables, slab, reserved and
    other kernel memory occupy - the unmovable kinds - against free and movable pages, from
    /proc/kpageflags frame by frame (root).  Says how many pageblocks page tables are the ONLY
    unmovable content of (moving the tables would free them) and ranks the unmovable kinds:
    the measured answer to the 2008 RFC's "page tables are the largest chunk of non-moveable
    memory (needs verification)".

    The page-table count covers the levels the running kernel marks PG_table (measured with
    the kernel walk of ptreloc's own tables where /proc/kcore exists; 6.1 marks PTE and PMD
    tables) and is checked against each node's PageTables counter."""
    census_mod.check_usage(nodes)
    if plot_path:
        from ptreloc import bench

        bench.check_plot_path(plot_path)
    c = census_mod.take_census(nodes, by_process=by_process)
    data = c.to_json()
    if plot_path:
        plot(data, plot_path)
    if as_json:
        emit_json(data)
        return
    _print(data)
    if plot_path:
        stdout_console.print(f"plot written to {plot_path}", markup=False)


def _print(data: dict[str, Any]) -> None:
    out = stdout_console
    levels = data["marked_levels"]
    if levels["marked"] is not None:
        out.print(f"page-table levels the kernel marks PG_table (counted as 'pagetable'): "
                  f"{', '.join(levels['marked'])}; unmarked: {', '.join(levels['unmarked'])} "
                  f"({levels['source']})", markup=False)
    else:
        out.print(f"page-table levels the kernel marks: {levels['reason']}", markup=False)
    shown = [k for k in _PAGE_KINDS
             if any(n["pages"][k] for n in data["per_node"].values())
             or k in ("pagetable", "slab", "free", "movable")]
    t = Table(title=f"pages per node by kind ({data['page_size'] // 1024} KiB pages)")
    t.add_column("node", justify="right")
    for k in shown:
        t.add_column(k, justify="right")
    for node, n in data["per_node"].items():
        t.add_row(node, *(f"{n['pages'][k]:,}" for k in shown))
    out.print(t)
    pb = data["pageblock_pages"]
    t = Table(title=f"pageblocks ({pb} pages, order {data['pageblock_order']})")
    for col in ("node", "total", "free", "pinned", "with page tables", "page tables only",
                "slab only", "reserved only", "kernel_other only"):
        t.add_column(col, justify="right")
    for node, n in data["per_node"].items():
        p = n["pageblocks"]
        only = p["only_unmovable_kind"]
        t.add_row(node, f"{p['total']:,}", f"{p['free']:,}", f"{p['pinned']:,}",
                  f"{p['with']['pagetable']:,}", f"{only['pagetable']:,}",
                  f"{only['slab']:,}", f"{only['reserved']:,}", f"{only['kernel_other']:,}")
    out.print(t)
    t = Table(title="unmovable kinds, ranked by pages")
    for col in ("rank", "kind", "pages", "MiB", "pageblocks holding it", "only unmovable kind"):
        t.add_column(col, justify="right")
    for i, r in enumerate(data["ranking"], 1):
        t.add_row(str(i), r["kind"], f"{r['pages']:,}",
                  f"{r['pages'] * data['page_size'] / (1 << 20):,.1f}",
                  f"{r['pageblocks']:,}", f"{r['only_unmovable_kind_pageblocks']:,}")
    out.print(t)
    rank = data["pagetable_rank"]
    out.print(f"page tables rank {rank['by_pages']} of {len(data['ranking'])} unmovable kinds "
              f"by pages, {rank['by_pageblocks']} by pageblocks pinned", markup=False)
    for node, n in data["per_node"].items():
        chk = n["pagetables_check"]
        verdict = {True: "agrees", False: "DISAGREES", None: "not checked"}[chk["agrees"]]
        out.print(f"node {node}: {chk['counted_pages']:,} page-table pages counted; "
                  f"PageTables {chk['node_pagetables_pages_before']} -> "
                  f"{chk['node_pagetables_pages_after']} pages during the scan "
                  f"(margin: vmstat lag {chk['vmstat_margin_pages']} + churn "
                  f"{chk['churn_pages']}): {verdict}", markup=False)
        free = n["free_check"]
        if free["node_memfree_pages"] and free["counted_free_pages"] < \
                free["node_memfree_pages"] // 2:
            out.print(f"node {node}: note: kpageflags marks {free['counted_free_pages']:,} "
                      f"pages free (buddy) but MemFree says {free['node_memfree_pages']:,}: "
                      "this kernel keeps free frames kpageflags does not flag, and they are "
                      "counted as kernel_other here", markup=False)
    if data["by_process"] is not None:
        t = Table(title="page-table frames by process (kernel walk)")
        for col in ("pid", "name", "frames per node", "memory blocks",
                    "in page-table-only pageblocks"):
            t.add_column(col)
        for p in data["by_process"]:
            if p["error"]:
                t.add_row(str(p["pid"]), p["name"], f"walk failed: {p['error']}", "", "")
                continue
            per = "; ".join(f"{node}: {sum(lv.values())}" for node, lv in p["tables"].items())
            blocks = ", ".join(f"{b} ({n})" for b, n in p["blocks"].items())
            t.add_row(str(p["pid"]), p["name"], per, blocks,
                      str(p["tables_in_pagetable_only_pageblocks"]))
        out.print(t)
    stderr_console.print(f"scanned in {data['scan_seconds']:.2f} s", markup=False)


def plot(data: dict[str, Any], path: str) -> None:
    """Pinned pageblocks per node, stacked by the unmovable kinds they hold (a pageblock with
    several kinds counts once, under 'mixed'), beside the pages per unmovable kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = list(data["per_node"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    bottom = [0] * len(nodes)
    kinds = list(data["unmovable_kinds"])
    for kind in kinds:
        vals = [data["per_node"][n]["pageblocks"]["only_unmovable_kind"][kind] for n in nodes]
        left.bar(nodes, vals, bottom=bottom, label=f"{kind} only")
        bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
    mixed = [data["per_node"][n]["pageblocks"]["pinned"]
             - sum(data["per_node"][n]["pageblocks"]["only_unmovable_kind"].values())
             for n in nodes]
    left.bar(nodes, mixed, bottom=bottom, label="mixed", color="grey")
    left.set_xlabel("node")
    left.set_ylabel(f"pinned pageblocks ({data['pageblock_pages']} pages)")
    left.set_title("pinned pageblocks by what pins them")
    left.legend(fontsize="small")
    width = 0.8 / max(1, len(nodes))
    for i, n in enumerate(nodes):
        pages = data["per_node"][n]["pages"]
        vals = [pages[k] + (pages["pagetable_unmarked"] if k == "pagetable" else 0)
                for k in kinds]
        left_edges = [j + i * width for j in range(len(kinds))]
        right.bar(left_edges, vals, width=width, label=f"node {n}")
    right.set_xticks([j + width * (len(nodes) - 1) / 2 for j in range(len(kinds))], kinds)
    right.set_yscale("log")
    right.set_ylabel("pages (log)")
    right.set_title("unmovable pages by kind")
    right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
