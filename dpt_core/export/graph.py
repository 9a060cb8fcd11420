"""DOT (Graphviz) and Mermaid renderings of a :class:`~dpt_core.store.lineage.LineageGraph`.

One node per product *version* (label: the file name and a short content hash),
the root's versions drawn bold; one arrow per lineage edge, from parent to
child, labelled with the job of the invocation that made the child (its task when
the job is a made-up name such as Dagster's ``__ephemeral_asset_job__``: see
:func:`~dpt_core.store.lineage.run_label`).
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from dpt_core.store.lineage import LineageGraph, Node

__all__ = ["node_label", "to_dot", "to_mermaid"]


def short_name(uri: str) -> str:
    """The last path segment of ``uri`` (decoded), or the URI itself."""
    name = posixpath.basename(unquote(uri.rstrip("/")))
    return name or uri


def short_hash(content_hash: str | None) -> str:
    if not content_hash:
        return "-"
    return content_hash.split(":", 1)[-1][:8]


def node_label(node: Node) -> str:
    return f"{short_name(node.uri)}\n{short_hash(node.content_hash)}"


def _ids(graph: LineageGraph) -> dict[str, str]:
    return {n.version: f"n{i}" for i, n in enumerate(graph.nodes)}


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graph: LineageGraph) -> str:
    """The graph in Graphviz DOT (``dot -Tsvg``)."""
    ids = _ids(graph)
    lines = [
        "digraph lineage {",
        "  rankdir=LR;",
        '  node [shape=box, fontname="Helvetica"];',
        f'  label="{_dot_text(graph.direction + " lineage of " + graph.root)}";',
    ]
    for node in graph.nodes:
        style = ", style=bold" if node.depth == 0 else ""
        tooltip = _dot_text(f"{node.uri} {node.version}")
        lines.append(
            f'  {ids[node.version]} [label="{_dot_text(node_label(node))}", tooltip="{tooltip}"{style}];'
        )
    for edge in graph.edges:
        if edge.parent_version not in ids or edge.child_version not in ids:
            continue
        label = f' [label="{_dot_text(edge.label)}"]' if edge.label else ""
        lines.append(f"  {ids[edge.parent_version]} -> {ids[edge.child_version]}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    escaped = text.replace("&", "#amp;").replace('"', "#quot;")
    return escaped.replace("<", "#lt;").replace(">", "#gt;").replace("\n", "<br/>")


def to_mermaid(graph: LineageGraph) -> str:
    """The graph as a Mermaid flowchart (paste into Markdown inside a ``mermaid`` block)."""
    ids = _ids(graph)
    lines = ["flowchart LR"]
    for node in graph.nodes:
        lines.append(f'  {ids[node.version]}["{_mermaid_text(node_label(node))}"]')
    for edge in graph.edges:
        if edge.parent_version not in ids or edge.child_version not in ids:
            continue
        arrow = f'-- "{_mermaid_text(edge.label)}" -->' if edge.label else "-->"
        lines.append(f"  {ids[edge.parent_version]} {arrow} {ids[edge.child_version]}")
    roots = [ids[n.version] for n in graph.nodes if n.depth == 0]
    if roots:
        lines.append("  classDef root stroke-width:3px;")
        lines.append(f"  class {','.join(roots)} root;")
    return "\n".join(lines) + "\n"
