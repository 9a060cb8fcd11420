"""Corpus: Dagster's partition guides, written as the documentation writes them.

Each test materialises partitions run by run (a backfill launches one run per partition
unless the asset has a single-run backfill policy), ticks the real dpt sensor, and asserts
the exact inputs recorded for every partition: the newest materialisation of each upstream
partition the partition mapping names, made before the downstream materialisation.

Sources: docs.dagster.io "Partitioning assets" (time-based, static, two-dimensional),
"Defining dependencies between partitioned assets" (default rules, the
``TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)`` example with
``start_date="2023-01-21"``, both with ``AssetDep`` and with ``AssetIn``), "Backfilling
data" (single-run backfills), and the API reference of each ``PartitionMapping``.
"""

import csv
import os

import dagster as dg
from dagster_corpus import Corpus, Step

EVENTS = "dagster://asset/events"
STATS = "dagster://asset/yesterday_event_stats"


# ---------------------------------------------------------------------------------------------
# The partition-mapping guide: TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
# ---------------------------------------------------------------------------------------------


def _yesterday_assets_with_asset_dep() -> list[dg.AssetsDefinition]:
    partitions_def = dg.DailyPartitionsDefinition(start_date="2023-01-21")

    @dg.asset(partitions_def=partitions_def)
    def events(): ...

    @dg.asset(
        partitions_def=partitions_def,
        deps=[
            dg.AssetDep(
                events,
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
            )
        ],
    )
    def yesterday_event_stats(): ...

    return [events, yesterday_event_stats]


def _yesterday_assets_with_asset_in() -> list[dg.AssetsDefinition]:
    partitions_def = dg.DailyPartitionsDefinition(start_date="2023-01-21")

    @dg.asset(partitions_def=partitions_def)
    def events(): ...

    @dg.asset(
        partitions_def=partitions_def,
        ins={
            "events": dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
            )
        },
    )
    def yesterday_event_stats(events): ...

    return [events, yesterday_event_stats]


def _yesterday_expected() -> dict[tuple[str, str | None, str], Step]:
    return {
        ("events", "2023-01-21", "day21"): Step("success", [], [f"{EVENTS}/2023-01-21"]),
        ("events", "2023-01-22", "day22"): Step("success", [], [f"{EVENTS}/2023-01-22"]),
        # The guide's case: partition 2023-01-22 reads events/2023-01-21 only.
        ("yesterday_event_stats", "2023-01-22", "stats22"): Step(
            "success", [f"{EVENTS}/2023-01-21 @ day21"], [f"{STATS}/2023-01-22"]
        ),
        # Both assets in one run: the downstream partition still reads yesterday's
        # events, not the partition its own run has just made.
        ("events", "2023-01-23", "both23"): Step("success", [], [f"{EVENTS}/2023-01-23"]),
        ("yesterday_event_stats", "2023-01-23", "both23"): Step(
            "success", [f"{EVENTS}/2023-01-22 @ day22"], [f"{STATS}/2023-01-23"]
        ),
        # events/2023-01-21 made again afterwards: stats of the 22nd keep the version they read.
        ("events", "2023-01-21", "day21-again"): Step("success", [], [f"{EVENTS}/2023-01-21"]),
        ("yesterday_event_stats", "2023-01-22", "stats22-again"): Step(
            "success", [f"{EVENTS}/2023-01-21 @ day21-again"], [f"{STATS}/2023-01-22"]
        ),
    }


def _run_yesterday(corpus: Corpus, assets: list[dg.AssetsDefinition]) -> None:
    events, stats = assets
    corpus.use(events, stats)
    assert corpus.materialize("day21", [events], partition_key="2023-01-21").success
    assert corpus.materialize("day22", [events], partition_key="2023-01-22").success
    assert corpus.materialize(
        "stats22", [events, stats], selection=[stats], partition_key="2023-01-22"
    ).success
    assert corpus.materialize("both23", [events, stats], partition_key="2023-01-23").success
    assert corpus.materialize("day21-again", [events], partition_key="2023-01-21").success
    assert corpus.materialize(
        "stats22-again", [events, stats], selection=[stats], partition_key="2023-01-22"
    ).success
    corpus.tick()


def test_time_window_offset_with_asset_dep(corpus: Corpus) -> None:
    _run_yesterday(corpus, _yesterday_assets_with_asset_dep())
    runs = {label: "success" for label in corpus.labels.values()}
    corpus.report(
        "partition mapping guide: AssetDep + TimeWindowPartitionMapping(-1, -1)",
        _yesterday_expected(),
        runs,
    )


def test_time_window_offset_with_asset_in(corpus: Corpus) -> None:
    _run_yesterday(corpus, _yesterday_assets_with_asset_in())
    runs = {label: "success" for label in corpus.labels.values()}
    corpus.report(
        "partition mapping guide: AssetIn + TimeWindowPartitionMapping(-1, -1)",
        _yesterday_expected(),
        runs,
    )


# ---------------------------------------------------------------------------------------------
# Time-based partitions: daily -> weekly (the default time-window mapping), files by dpt/path
# ---------------------------------------------------------------------------------------------


def test_daily_to_weekly_default_mapping(corpus: Corpus) -> None:
    daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    weekly_partitions = dg.WeeklyPartitionsDefinition(start_date="2024-01-01")

    @dg.asset(partitions_def=daily_partitions)
    def daily_sales_data(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        date = context.partition_key
        os.makedirs("data/daily_sales", exist_ok=True)
        filename = f"data/daily_sales/sales_{date}.csv"
        with open(filename, "w", newline="") as f:
            csv.writer(f).writerows([("date", "sales"), (date, 1000)])
        context.log.info(f"Daily sales data written to {filename}")
        return dg.MaterializeResult(metadata={"dpt/path": os.path.abspath(filename)})

    @dg.asset(partitions_def=weekly_partitions, deps=[daily_sales_data])
    def weekly_sales_summary(context: dg.AssetExecutionContext) -> None:
        partition_key_range = context.asset_partition_key_range_for_input("daily_sales_data")
        start_date, end_date = partition_key_range.start, partition_key_range.end
        context.log.info(f"start_date: {start_date}, end_date: {end_date}")
        days = daily_partitions.get_partition_keys_in_range(partition_key_range)
        total = 0
        for date in days:
            with open(f"data/daily_sales/sales_{date}.csv") as f:
                total += sum(int(row["sales"]) for row in csv.DictReader(f))
        context.log.info(f"weekly sales summary for {context.partition_key}: {total}")

    corpus.use(daily_sales_data, weekly_sales_summary)
    days = [f"2024-01-{d:02d}" for d in range(6, 15)]
    for day in days:  # a backfill: one run per partition
        assert corpus.materialize(day, [daily_sales_data], partition_key=day).success
    week = corpus.materialize(
        "week07",
        [daily_sales_data, weekly_sales_summary],
        selection=[weekly_sales_summary],
        partition_key="2024-01-07",
    )
    assert week.success
    corpus.tick()

    def sales(day: str) -> str:
        return f"file:data/daily_sales/sales_{day}.csv"

    expected = {("daily_sales_data", day, day): Step("success", [], [sales(day)]) for day in days}
    # Weekly partitions start on Sunday: week 2024-01-07 is the 7th to the 13th.
    expected[("weekly_sales_summary", "2024-01-07", "week07")] = Step(
        "success",
        [f"{sales(f'2024-01-{d:02d}')} @ 2024-01-{d:02d}" for d in range(7, 14)],
        ["dagster://asset/weekly_sales_summary/2024-01-07"],
    )
    corpus.report(
        "time-based partitions: daily -> weekly (default time-window mapping)",
        expected,
        {label: "success" for label in corpus.labels.values()},
    )


# ---------------------------------------------------------------------------------------------
# Static partitions: identity, then StaticPartitionMapping
# ---------------------------------------------------------------------------------------------


def test_static_partitions_identity_and_static_mapping(corpus: Corpus) -> None:
    region_partitions = dg.StaticPartitionsDefinition(["us", "eu", "jp"])
    market_partitions = dg.StaticPartitionsDefinition(["americas", "europe", "asia"])

    @dg.asset(partitions_def=region_partitions)
    def regional_sales_data(context: dg.AssetExecutionContext) -> None:
        region = context.partition_key
        os.makedirs("data/regional_sales", exist_ok=True)
        with open(f"data/regional_sales/sales_{region}.csv", "w") as f:
            f.write(f"region,sales\n{region},100\n")

    @dg.asset(partitions_def=region_partitions, deps=[regional_sales_data])
    def daily_sales_summary(context):
        region = context.partition_key
        with open(f"data/regional_sales/sales_{region}.csv") as f:
            context.log.info(f"Regional sales summary for {region}: {f.read()}")

    @dg.asset(
        partitions_def=market_partitions,
        deps=[
            dg.AssetDep(
                regional_sales_data,
                partition_mapping=dg.StaticPartitionMapping(
                    {"us": "americas", "eu": "europe", "jp": "asia"}
                ),
            )
        ],
    )
    def market_report(context: dg.AssetExecutionContext) -> None: ...

    regional_sales_job = dg.define_asset_job(
        name="regional_sales_job", selection=[regional_sales_data, daily_sales_summary]
    )
    corpus.use(regional_sales_data, daily_sales_summary, market_report, jobs=[regional_sales_job])
    for region in ("us", "eu", "jp"):  # a backfill of the job
        assert corpus.run_job(region, "regional_sales_job", partition_key=region).success
    assert corpus.materialize("us-again", [regional_sales_data], partition_key="us").success
    assert corpus.materialize(
        "americas",
        [regional_sales_data, market_report],
        selection=[market_report],
        partition_key="americas",
    ).success
    assert corpus.materialize(
        "asia",
        [regional_sales_data, market_report],
        selection=[market_report],
        partition_key="asia",
    ).success
    corpus.tick()

    data = "dagster://asset/regional_sales_data"
    summary = "dagster://asset/daily_sales_summary"
    expected: dict[tuple[str, str | None, str], Step] = {}
    for region in ("us", "eu", "jp"):
        expected[("regional_sales_data", region, region)] = Step(
            "success", [], [f"{data}/{region}"]
        )
        expected[("daily_sales_summary", region, region)] = Step(
            "success", [f"{data}/{region} @ {region}"], [f"{summary}/{region}"]
        )
    expected[("regional_sales_data", "us", "us-again")] = Step("success", [], [f"{data}/us"])
    expected[("market_report", "americas", "americas")] = Step(
        "success", [f"{data}/us @ us-again"], ["dagster://asset/market_report/americas"]
    )
    expected[("market_report", "asia", "asia")] = Step(
        "success", [f"{data}/jp @ jp"], ["dagster://asset/market_report/asia"]
    )
    runs = {label: "success" for label in corpus.labels.values()}
    corpus.report("static partitions: identity + StaticPartitionMapping", expected, runs)


# ---------------------------------------------------------------------------------------------
# Two-dimensional partitions: identity, MultiToSingleDimension, MultiPartitionMapping
# ---------------------------------------------------------------------------------------------


def test_multi_partitions(corpus: Corpus) -> None:
    daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    region_partitions = dg.StaticPartitionsDefinition(["us", "eu", "jp"])
    two_dimensional_partitions = dg.MultiPartitionsDefinition(
        {"date": daily_partitions, "region": region_partitions}
    )

    @dg.asset(partitions_def=two_dimensional_partitions)
    def daily_regional_sales_data(context: dg.AssetExecutionContext) -> None:
        keys_by_dimension: dg.MultiPartitionKey = context.partition_key.keys_by_dimension
        date, region = keys_by_dimension["date"], keys_by_dimension["region"]
        context.log.info(f"sales of {region} on {date}")

    @dg.asset(partitions_def=two_dimensional_partitions, deps=[daily_regional_sales_data])
    def daily_regional_sales_summary(context): ...

    @dg.asset(
        partitions_def=daily_partitions,
        deps=[
            dg.AssetDep(
                daily_regional_sales_data,
                partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
                    partition_dimension_name="date"
                ),
            )
        ],
    )
    def daily_sales_rollup(context: dg.AssetExecutionContext) -> None: ...

    @dg.asset(
        partitions_def=two_dimensional_partitions,
        deps=[
            dg.AssetDep(
                daily_regional_sales_data,
                partition_mapping=dg.MultiPartitionMapping(
                    {
                        "date": dg.DimensionPartitionMapping(
                            dimension_name="date",
                            partition_mapping=dg.TimeWindowPartitionMapping(
                                start_offset=-1, end_offset=-1
                            ),
                        ),
                        "region": dg.DimensionPartitionMapping(
                            dimension_name="region",
                            partition_mapping=dg.IdentityPartitionMapping(),
                        ),
                    }
                ),
            )
        ],
    )
    def day_over_day(context: dg.AssetExecutionContext) -> None: ...

    daily_regional_sales_job = dg.define_asset_job(
        name="daily_regional_sales_job",
        selection=[daily_regional_sales_data, daily_regional_sales_summary],
    )
    corpus.use(
        daily_regional_sales_data,
        daily_regional_sales_summary,
        daily_sales_rollup,
        day_over_day,
        jobs=[daily_regional_sales_job],
    )
    keys = ["2024-01-01|eu", "2024-01-01|us", "2024-01-02|us"]
    for key in keys:
        date, region = key.split("|")
        partition = dg.MultiPartitionKey({"date": date, "region": region})
        assert corpus.run_job(key, "daily_regional_sales_job", partition_key=partition).success
    assert corpus.materialize(
        "rollup",
        [daily_regional_sales_data, daily_sales_rollup],
        selection=[daily_sales_rollup],
        partition_key="2024-01-01",
    ).success
    assert corpus.materialize(
        "dod",
        [daily_regional_sales_data, day_over_day],
        selection=[day_over_day],
        partition_key=dg.MultiPartitionKey({"date": "2024-01-02", "region": "us"}),
    ).success
    corpus.tick()

    data = "dagster://asset/daily_regional_sales_data"
    summary = "dagster://asset/daily_regional_sales_summary"
    expected: dict[tuple[str, str | None, str], Step] = {}
    for key in keys:
        uri_key = key.replace("|", "%7C")
        expected[("daily_regional_sales_data", key, key)] = Step(
            "success", [], [f"{data}/{uri_key}"]
        )
        expected[("daily_regional_sales_summary", key, key)] = Step(
            "success", [f"{data}/{uri_key} @ {key}"], [f"{summary}/{uri_key}"]
        )
    # One date, every region made for it (jp never was).
    expected[("daily_sales_rollup", "2024-01-01", "rollup")] = Step(
        "success",
        [f"{data}/2024-01-01%7Ceu @ 2024-01-01|eu", f"{data}/2024-01-01%7Cus @ 2024-01-01|us"],
        ["dagster://asset/daily_sales_rollup/2024-01-01"],
    )
    # The day before, same region.
    expected[("day_over_day", "2024-01-02|us", "dod")] = Step(
        "success",
        [f"{data}/2024-01-01%7Cus @ 2024-01-01|us"],
        ["dagster://asset/day_over_day/2024-01-02%7Cus"],
    )
    runs = {label: "success" for label in corpus.labels.values()}
    corpus.report(
        "two-dimensional partitions: identity, MultiToSingleDimension, MultiPartitionMapping",
        expected,
        runs,
    )


# ---------------------------------------------------------------------------------------------
# All partitions, specific partitions, unpartitioned <-> partitioned
# ---------------------------------------------------------------------------------------------


def test_all_and_specific_partitions(corpus: Corpus) -> None:
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")
    teams = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(partitions_def=daily)
    def observations(context: dg.AssetExecutionContext) -> None: ...

    @dg.asset(deps=[observations])
    def season_summary() -> None:
        """Unpartitioned: the default mapping is every partition of the parent."""

    @dg.asset(
        partitions_def=teams,
        deps=[dg.AssetDep(observations, partition_mapping=dg.AllPartitionMapping())],
    )
    def team_view(context: dg.AssetExecutionContext) -> None: ...

    @dg.asset(
        partitions_def=teams,
        deps=[
            dg.AssetDep(
                observations,
                partition_mapping=dg.SpecificPartitionsPartitionMapping(["2024-01-02"]),
            )
        ],
    )
    def reference_day(context: dg.AssetExecutionContext) -> None: ...

    corpus.use(observations, season_summary, team_view, reference_day)
    for label, day in (
        ("d1", "2024-01-01"),
        ("d2", "2024-01-02"),
        ("d3", "2024-01-03"),
        ("d2-again", "2024-01-02"),
    ):
        assert corpus.materialize(label, [observations], partition_key=day).success
    assert corpus.materialize(
        "season", [observations, season_summary], selection=[season_summary]
    ).success
    assert corpus.materialize(
        "team-a", [observations, team_view], selection=[team_view], partition_key="a"
    ).success
    assert corpus.materialize(
        "ref-b", [observations, reference_day], selection=[reference_day], partition_key="b"
    ).success
    # Made after every reader: read by none of them.
    assert corpus.materialize("d3-later", [observations], partition_key="2024-01-03").success
    corpus.tick()

    obs = "dagster://asset/observations"
    every = [f"{obs}/2024-01-01 @ d1", f"{obs}/2024-01-02 @ d2-again", f"{obs}/2024-01-03 @ d3"]
    expected = {
        ("observations", "2024-01-01", "d1"): Step("success", [], [f"{obs}/2024-01-01"]),
        ("observations", "2024-01-02", "d2"): Step("success", [], [f"{obs}/2024-01-02"]),
        ("observations", "2024-01-03", "d3"): Step("success", [], [f"{obs}/2024-01-03"]),
        ("observations", "2024-01-02", "d2-again"): Step("success", [], [f"{obs}/2024-01-02"]),
        ("observations", "2024-01-03", "d3-later"): Step("success", [], [f"{obs}/2024-01-03"]),
        ("season_summary", None, "season"): Step(
            "success", every, ["dagster://asset/season_summary"]
        ),
        ("team_view", "a", "team-a"): Step("success", every, ["dagster://asset/team_view/a"]),
        ("reference_day", "b", "ref-b"): Step(
            "success", [f"{obs}/2024-01-02 @ d2-again"], ["dagster://asset/reference_day/b"]
        ),
    }
    runs = {label: "success" for label in corpus.labels.values()}
    corpus.report(
        "all partitions (default fan-in, AllPartitionMapping), SpecificPartitionsPartitionMapping",
        expected,
        runs,
    )


def test_unpartitioned_upstream_of_a_partitioned_asset(corpus: Corpus) -> None:
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")

    @dg.asset
    def calibration() -> None: ...

    @dg.asset(partitions_def=daily, deps=[calibration])
    def calibrated_night(context: dg.AssetExecutionContext) -> None: ...

    corpus.use(calibration, calibrated_night)
    assert corpus.materialize("cal1", [calibration]).success
    assert corpus.materialize(
        "n1",
        [calibration, calibrated_night],
        selection=[calibrated_night],
        partition_key="2024-01-01",
    ).success
    assert corpus.materialize("cal2", [calibration]).success
    assert corpus.materialize(
        "n2",
        [calibration, calibrated_night],
        selection=[calibrated_night],
        partition_key="2024-01-02",
    ).success
    corpus.tick()

    cal = "dagster://asset/calibration"
    night = "dagster://asset/calibrated_night"
    expected = {
        ("calibration", None, "cal1"): Step("success", [], [cal]),
        ("calibration", None, "cal2"): Step("success", [], [cal]),
        ("calibrated_night", "2024-01-01", "n1"): Step(
            "success", [f"{cal} @ cal1"], [f"{night}/2024-01-01"]
        ),
        ("calibrated_night", "2024-01-02", "n2"): Step(
            "success", [f"{cal} @ cal2"], [f"{night}/2024-01-02"]
        ),
    }
    runs = {label: "success" for label in corpus.labels.values()}
    corpus.report("unpartitioned -> partitioned", expected, runs)


# ---------------------------------------------------------------------------------------------
# Backfills: one run per partition, and a single-run backfill of a partition range
# ---------------------------------------------------------------------------------------------


def test_single_run_backfill_of_a_range(corpus: Corpus) -> None:
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")

    @dg.asset(partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
    def events(context: dg.AssetExecutionContext) -> None:
        start_datetime, end_datetime = context.partition_time_window
        context.log.info(f"events from {start_datetime} to {end_datetime}")

    @dg.asset(partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run(), deps=[events])
    def daily_totals(context: dg.AssetExecutionContext) -> None:
        context.log.info(f"totals of {context.partition_keys}")

    job = dg.define_asset_job("backfill_job", selection=[events, daily_totals])
    corpus.use(events, daily_totals, jobs=[job])
    assert corpus.run_job(
        "range",
        "backfill_job",
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-03",
        },
    ).success
    corpus.tick()

    days = ("2024-01-01", "2024-01-02", "2024-01-03")
    expected: dict[tuple[str, str | None, str], Step] = {}
    for day in days:
        expected[("events", day, "range")] = Step("success", [], [f"{EVENTS}/{day}"])
        expected[("daily_totals", day, "range")] = Step(
            "success", [f"{EVENTS}/{day} @ range"], [f"dagster://asset/daily_totals/{day}"]
        )
    corpus.report("single-run backfill of a range", expected, {"range": "success"})


# ---------------------------------------------------------------------------------------------
# A partition that fails
# ---------------------------------------------------------------------------------------------


def test_a_failing_partition(corpus: Corpus) -> None:
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")

    @dg.asset(partitions_def=daily)
    def raw_night(context: dg.AssetExecutionContext) -> None:
        if context.partition_key == "2024-01-02":
            raise ValueError("no data for 2024-01-02")

    @dg.asset(partitions_def=daily, deps=[raw_night])
    def processed_night(context: dg.AssetExecutionContext) -> None: ...

    corpus.use(raw_night, processed_night)
    assert corpus.materialize(
        "ok", [raw_night, processed_night], partition_key="2024-01-01"
    ).success
    failed = corpus.materialize("bad", [raw_night, processed_night], partition_key="2024-01-02")
    assert not failed.success
    corpus.tick()

    raw = "dagster://asset/raw_night"
    expected = {
        ("raw_night", "2024-01-01", "ok"): Step("success", [], [f"{raw}/2024-01-01"]),
        ("processed_night", "2024-01-01", "ok"): Step(
            "success", [f"{raw}/2024-01-01 @ ok"], ["dagster://asset/processed_night/2024-01-01"]
        ),
        ("raw_night", "2024-01-02", "bad"): Step("failed"),
        ("processed_night", "2024-01-02", "bad"): Step("skipped"),
    }
    corpus.report("a failing partition", expected, {"ok": "success", "bad": "failed"})
