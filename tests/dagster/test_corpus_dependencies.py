"""Corpus: Dagster's asset-dependency guides, written as the documentation writes them.

Sources: docs.dagster.io "Defining assets that depend on other assets" (``deps=``, across
code locations), "Passing data between assets" (I/O managers, ``AssetIn``), "Defining
assets" (``@multi_asset``, ``@graph_asset``, ``@graph_multi_asset``), "Testing assets"
(``materialize(..., raise_on_error=False)``) and "Op retries" (``RetryPolicy``).
Each test asserts the exact inputs and outputs dpt recorded for every materialisation,
the status of every run and of every asset a failed run did not make, and that nothing
is left ``running``.
"""

import os
import sqlite3

import dagster as dg
from dagster_corpus import Corpus, Step


def execute_query(query: str) -> None:
    """The documentation's stand-in for a warehouse: a SQLite file under ``data/``."""
    os.makedirs("data", exist_ok=True)
    with sqlite3.connect("data/warehouse.db") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS cereals (name TEXT, sugar_grams INTEGER)")
        conn.execute(query.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))


def test_deps(corpus: Corpus) -> None:
    @dg.asset
    def sugary_cereals() -> None:
        execute_query("CREATE TABLE sugary_cereals AS SELECT * FROM cereals WHERE sugar_grams > 10")

    @dg.asset(deps=[sugary_cereals])
    def shopping_list() -> None:
        execute_query("CREATE TABLE shopping_list AS SELECT * FROM sugary_cereals")

    corpus.use(sugary_cereals, shopping_list)
    assert corpus.materialize("both", [sugary_cereals, shopping_list]).success
    assert corpus.materialize(
        "list-only", [sugary_cereals, shopping_list], selection=[shopping_list]
    ).success
    assert corpus.materialize("cereals-again", [sugary_cereals]).success
    corpus.tick()

    cereals, shopping = "dagster://asset/sugary_cereals", "dagster://asset/shopping_list"
    expected = {
        ("sugary_cereals", None, "both"): Step("success", [], [cereals]),
        ("shopping_list", None, "both"): Step("success", [f"{cereals} @ both"], [shopping]),
        ("shopping_list", None, "list-only"): Step("success", [f"{cereals} @ both"], [shopping]),
        ("sugary_cereals", None, "cereals-again"): Step("success", [], [cereals]),
    }
    corpus.report(
        "deps= (sugary_cereals -> shopping_list)",
        expected,
        {"both": "success", "list-only": "success", "cereals-again": "success"},
    )


def test_passing_data_through_the_io_manager(corpus: Corpus) -> None:
    @dg.asset
    def people():
        return [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}, {"id": 3, "name": "Charlie"}]

    @dg.asset
    def birds():
        return [
            {"id": 1, "name": "Bluebird"},
            {"id": 2, "name": "Robin"},
            {"id": 3, "name": "Eagle"},
        ]

    @dg.asset
    def combined_data(people, birds):
        return people + birds

    @dg.asset(ins={"upstream": dg.AssetIn(key="combined_data")})
    def name_count(upstream):
        return len(upstream)

    corpus.use(people, birds, combined_data, name_count)
    assert corpus.materialize("all", [people, birds, combined_data, name_count]).success
    assert corpus.materialize("people-again", [people]).success
    assert corpus.materialize(
        "combine-again", [people, birds, combined_data], selection=[combined_data]
    ).success
    corpus.tick()

    a = "dagster://asset/"
    expected = {
        ("people", None, "all"): Step("success", [], [a + "people"]),
        ("birds", None, "all"): Step("success", [], [a + "birds"]),
        ("combined_data", None, "all"): Step(
            "success", [f"{a}birds @ all", f"{a}people @ all"], [a + "combined_data"]
        ),
        ("name_count", None, "all"): Step(
            "success", [f"{a}combined_data @ all"], [a + "name_count"]
        ),
        ("people", None, "people-again"): Step("success", [], [a + "people"]),
        ("combined_data", None, "combine-again"): Step(
            "success", [f"{a}birds @ all", f"{a}people @ people-again"], [a + "combined_data"]
        ),
    }
    corpus.report(
        "passing data: I/O manager inputs and AssetIn(key=...)",
        expected,
        {"all": "success", "people-again": "success", "combine-again": "success"},
    )


def test_multi_asset(corpus: Corpus) -> None:
    @dg.multi_asset(specs=[dg.AssetSpec("asset_one"), dg.AssetSpec("asset_two")])
    def my_multi_asset():
        yield dg.MaterializeResult(asset_key="asset_one", metadata={"num_rows": 10})
        yield dg.MaterializeResult(asset_key="asset_two", metadata={"num_rows": 24})

    @dg.multi_asset(
        specs=[
            dg.AssetSpec("orders_cleaned", deps=["asset_one"], skippable=True),
            dg.AssetSpec("users_cleaned", deps=["asset_two"], skippable=True),
        ],
        can_subset=True,
    )
    def split_actions(context: dg.AssetExecutionContext):
        for key in sorted(context.selected_asset_keys):
            yield dg.MaterializeResult(asset_key=key)

    @dg.asset(deps=["asset_two"])
    def report(): ...

    corpus.use(my_multi_asset, split_actions, report)
    assert corpus.materialize("multi", [my_multi_asset]).success
    assert corpus.materialize(
        "subset",
        [my_multi_asset, split_actions],
        selection=[dg.AssetKey("users_cleaned")],
    ).success
    assert corpus.materialize("all", [my_multi_asset, split_actions, report]).success
    corpus.tick()

    a = "dagster://asset/"
    expected = {
        ("asset_one", None, "multi"): Step("success", [], [a + "asset_one"]),
        ("asset_two", None, "multi"): Step("success", [], [a + "asset_two"]),
        ("users_cleaned", None, "subset"): Step(
            "success", [f"{a}asset_two @ multi"], [a + "users_cleaned"]
        ),
        ("asset_one", None, "all"): Step("success", [], [a + "asset_one"]),
        ("asset_two", None, "all"): Step("success", [], [a + "asset_two"]),
        ("orders_cleaned", None, "all"): Step(
            "success", [f"{a}asset_one @ all"], [a + "orders_cleaned"]
        ),
        ("users_cleaned", None, "all"): Step(
            "success", [f"{a}asset_two @ all"], [a + "users_cleaned"]
        ),
        ("report", None, "all"): Step("success", [f"{a}asset_two @ all"], [a + "report"]),
    }
    corpus.report(
        "@multi_asset (and a subsettable one with deps)",
        expected,
        {"multi": "success", "subset": "success", "all": "success"},
    )


def test_graph_backed_assets(corpus: Corpus) -> None:
    @dg.op(retry_policy=dg.RetryPolicy(max_retries=5, delay=0.2, backoff=dg.Backoff.EXPONENTIAL))
    def step_one(context: dg.OpExecutionContext) -> int:
        if context.retry_number == 0:  # the documentation's flaky step, made deterministic
            raise Exception("Flaky step that may fail randomly")
        return 42

    @dg.op
    def step_two(num: int):
        return num**2

    @dg.graph_asset
    def complex_asset():
        return step_two(step_one())

    @dg.op
    def add_one(num: int) -> int:
        return num + 1

    @dg.graph_asset
    def downstream_of_complex(complex_asset):
        return add_one(complex_asset)

    @dg.op(out={"first": dg.Out(), "second": dg.Out()})
    def split(num: int):
        return num, -num

    @dg.graph_multi_asset(outs={"positive": dg.AssetOut(), "negative": dg.AssetOut()})
    def signs(complex_asset):
        first, second = split(complex_asset)
        return {"positive": first, "negative": second}

    corpus.use(complex_asset, downstream_of_complex, signs)
    assert corpus.materialize("graph", [complex_asset, downstream_of_complex, signs]).success
    corpus.tick()

    a = "dagster://asset/"
    expected = {
        ("complex_asset", None, "graph"): Step("success", [], [a + "complex_asset"]),
        ("downstream_of_complex", None, "graph"): Step(
            "success", [f"{a}complex_asset @ graph"], [a + "downstream_of_complex"]
        ),
        ("positive", None, "graph"): Step(
            "success", [f"{a}complex_asset @ graph"], [a + "positive"]
        ),
        ("negative", None, "graph"): Step(
            "success", [f"{a}complex_asset @ graph"], [a + "negative"]
        ),
    }
    corpus.report(
        "@graph_asset (with RetryPolicy) and @graph_multi_asset", expected, {"graph": "success"}
    )


def test_dependency_on_another_code_location(corpus: Corpus) -> None:
    @dg.asset(deps=["code_location_1_asset"])
    def code_location_2_asset():
        os.makedirs("data", exist_ok=True)
        with open("data/code_location_2_asset.json", "w") as f:
            f.write('{"from": "code_location_1_asset"}')
        return dg.MaterializeResult(
            metadata={"dpt/path": os.path.abspath("data/code_location_2_asset.json")}
        )

    corpus.use(code_location_2_asset)
    assert corpus.materialize("second", [code_location_2_asset]).success
    corpus.tick()

    expected = {
        ("code_location_2_asset", None, "second"): Step(
            "success",
            ["dagster://asset/code_location_1_asset @ -"],
            ["file:data/code_location_2_asset.json"],
        )
    }
    corpus.report("deps on an asset of another code location", expected, {"second": "success"})


def test_failures_with_raise_on_error_false(corpus: Corpus) -> None:
    @dg.asset
    def upstream() -> list[int]:
        return [1, 2, 3]

    @dg.asset
    def fails(upstream: list[int]) -> int:
        raise ValueError(f"cannot summarise {len(upstream)} values")

    @dg.asset
    def after_failure(fails: int) -> int:
        return fails + 1

    @dg.asset
    def independent(upstream: list[int]) -> int:
        return sum(upstream)

    corpus.use(upstream, fails, after_failure, independent)
    result = corpus.materialize("failing", [upstream, fails, after_failure, independent])
    assert not result.success
    corpus.tick()

    a = "dagster://asset/"
    expected = {
        ("upstream", None, "failing"): Step("success", [], [a + "upstream"]),
        ("independent", None, "failing"): Step(
            "success", [f"{a}upstream @ failing"], [a + "independent"]
        ),
        ("fails", None, "failing"): Step("failed"),
        ("after_failure", None, "failing"): Step("skipped"),
    }
    corpus.report(
        "materialize(..., raise_on_error=False) with a failing asset",
        expected,
        {"failing": "failed"},
    )
    errors = {
        r.task: r.error
        for r in corpus.db.rows("SELECT task, error FROM invocations WHERE task IS NOT NULL")
    }
    assert errors["fails"] == 'step "fails" failed: ValueError: cannot summarise 3 values'
    assert "not materialised" in errors["after_failure"]
