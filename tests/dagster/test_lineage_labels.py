"""Lineage pictures label a Dagster edge by its asset when the job names nothing.

``dg.materialize()`` runs in Dagster's ``__ephemeral_asset_job__``: the job is recorded
as it is, but an edge labelled with it says nothing about what made the file; the
asset (the invocation's task) does. A named job keeps its name.
"""

from __future__ import annotations

import re

from click.testing import CliRunner
from dagster_survey_assets import Pipeline, clean, raw, summary

import dpt_core
from dpt_core.cli import build_cli
from dpt_core.export.graph import to_dot, to_mermaid


def dot_edge_labels(dot: str) -> list[str]:
    return re.findall(r'-> n\d+ \[label="([^"]*)"\];', dot)


def test_an_edge_of_an_ephemeral_asset_job_is_labelled_by_its_asset(pipeline: Pipeline) -> None:
    run = pipeline.materialize([raw, clean, summary])
    assert run.success
    pipeline.tick()

    graph = dpt_core.lineage(pipeline.data_dir / "clean.txt", "upstream")
    assert len(graph.edges) == 2  # from raw.txt and from the external catalog asset
    for edge in graph.edges:
        assert (edge.job, edge.task) == ("__ephemeral_asset_job__", "clean")  # recorded as is
        assert edge.label == "clean"
    assert dot_edge_labels(to_dot(graph)) == ["clean", "clean"]
    assert '-- "clean" -->' in to_mermaid(graph)
    assert "__ephemeral_asset_job__" not in to_dot(graph) + to_mermaid(graph)

    tree = CliRunner().invoke(build_cli(), ["lineage", "dagster://asset/summary", "--upstream"])
    assert tree.exit_code == 0, tree.output
    assert re.search(r"clean\.txt \w{8} <- clean \(run \w{8}, success\)", tree.output)
    assert re.search(r"raw\.txt \w{8} <- raw \(run \w{8}, success\)", tree.output)
    assert "__ephemeral_asset_job__" not in tree.output


def test_an_edge_of_a_named_job_keeps_the_job_name(pipeline: Pipeline) -> None:
    night = pipeline.run_job("nightly_job", partition_key="2024-01-02")
    assert night.success
    pipeline.tick()

    graph = dpt_core.lineage("dagster://asset/survey/calibrated/2024-01-02", "upstream")
    [edge] = graph.edges
    assert (edge.job, edge.task) == ("nightly_job", "survey/calibrated")
    assert edge.parent.endswith("/nights/2024-01-02.txt")
    assert dot_edge_labels(to_dot(graph)) == ["nightly_job"]
    assert '-- "nightly_job" -->' in to_mermaid(graph)
