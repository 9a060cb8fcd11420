"""A small survey pipeline the explorer's browser tests record and then look at.

Run as a script (``python survey_pipeline.py WORKDIR``) with the ``DPT_*`` variables of
the database to record into. Everything is recorded for real, by dpt's recorders in
separate processes and by ``dpt serve`` from OpenLineage events:

* ``dpt run`` (orchestrator ``cli``): ``ingest`` turns ``exposures.csv`` into
  ``observations.csv``; a job named ``"><script>alert(1)</script>`` writes a file named
  ``<img src=x onerror=alert(1)>.csv`` and fails; ``archive`` runs a command holding a
  password flag.
* the Python API (orchestrator ``python``): a ``nightly`` run with child runs:
  ``catalog`` (observations -> catalog.json), ``cutouts`` (catalog -> 486 cutout files, a
  fan-out the lineage picture collapses), ``summary`` (catalog + zeropoints.txt ->
  summary.txt) and ``report`` (catalog -> report.html, then fails). ``catalog`` ran once before, in another process whose environment differs
  (``SURVEY_RELEASE`` dr2 -> dr1, a changed secret), for the environment diff. These runs
  carry tags (``TAGS``; one value is markup), for the runs page's tag filter.

* OpenLineage events (with ``DPT_TEST_SERVER_URL`` set: the ``dpt serve`` to send them
  to), sent by the openlineage-python client as dbt-ol and Spark send theirs: a dbt model
  reads ``catalog.json`` (named by its content hash) and writes a PostgreSQL table; a
  Spark job reads the table and fails (out of memory), its retry writes to S3.

Afterwards ``zeropoints.txt`` is revised, so ``summary.txt`` is stale.
Every secret below must never show on a page: the tests look for these strings.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

#: Values that dpt must redact and the explorer must never show.
SECRETS = {
    "SURVEY_DB_PASSWORD": "correct-horse-battery-staple-42",
    "SURVEY_DB_PASSWORD_DR2": "tr0ub4dor-and-3-zebras",
    "COMMAND_PASSWORD": "hunter2-Zebra-9931",
    "PARAMETER_TOKEN": "tok-Quokka-77123-secret",
}
XSS_JOB = '"><script>alert(1)</script>'
XSS_FILE = "<img src=x onerror=alert(1)>.csv"
XSS_TAG = '"><img src=x onerror=alert(2)>'
FAN_OUT = 486
#: The tags of the Python-API runs, by job (``catalog``'s ``release`` is its process's
#: ``SURVEY_RELEASE``: dr2 for the earlier run, dr1 for the one under ``nightly``).
TAGS: dict[str, dict[str, str]] = {
    "nightly": {"survey": "tess", "night": "2025-03-01"},
    "catalog": {"survey": "tess"},
    "cutouts": {"survey": "tess", "release": "dr1", "team/owner": "photometry & cutouts"},
    "summary": {"release": "dr1"},
    "report": {"survey": "tess", "ticket": XSS_TAG},
}


def tagged_runs() -> list[tuple[str, dict[str, str]]]:
    """``(job, tags)`` of every tagged run the pipeline records, oldest first."""
    return [
        ("catalog", {**TAGS["catalog"], "release": "dr2"}),
        ("nightly", TAGS["nightly"]),
        ("catalog", {**TAGS["catalog"], "release": "dr1"}),
        *[(job, TAGS[job]) for job in ("cutouts", "summary", "report")],
    ]


def dpt(*args: str, env: dict[str, str] | None = None, check: bool = True) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "dpt_core.cli", *args], env=env or dict(os.environ), check=False
    )
    if check and result.returncode != 0:
        raise SystemExit(f"dpt {' '.join(args)} exited {result.returncode}")
    return result.returncode


def python_step(workdir: Path, step: str, **extra_env: str) -> None:
    """This script again, in a process of its own, running one Python-API step."""
    env = dict(os.environ, **extra_env)
    subprocess.run([sys.executable, __file__, str(workdir), step], env=env, check=True)


def write_exposures(path: Path, nights: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["exposure", "target", "seeing"])
        for exposure in range(nights):
            writer.writerow(
                [exposure, ("NGC 1275", "M 87", "3C 273")[exposure % 3], 0.7 + exposure / 20]
            )


INGEST = (
    "import csv, sys; rows = list(csv.DictReader(open(sys.argv[1])));"
    "good = [r for r in rows if float(r['seeing']) < 1.2];"
    "w = csv.DictWriter(open(sys.argv[2], 'w', newline=''), fieldnames=rows[0].keys());"
    "w.writeheader(); w.writerows(good)"
)


def nightly(workdir: Path) -> None:
    """The Python-API part: a parent run with three children, one of which fails."""
    import dpt_core

    catalog = workdir / "catalog.json"
    with dpt_core.invocation("nightly", parameters={"night": "2025-03-01"}, tags=TAGS["nightly"]):
        catalog_step(workdir)
        with dpt_core.invocation(
            "cutouts",
            task="stamp",
            parameters={"size": 64, "db_password": SECRETS["PARAMETER_TOKEN"]},
            tags=TAGS["cutouts"],
        ) as inv:
            inv.read(catalog)
            cutouts = workdir / "cutouts"
            cutouts.mkdir(exist_ok=True)
            made = []
            for index in range(FAN_OUT):
                path = cutouts / f"cutout-{index:03d}.fits"
                path.write_bytes(f"SIMPLE = T / cutout {index}\n".encode() * 8)
                made.append(path)
            inv.write(*made)
        zeropoints = workdir / "zeropoints.txt"
        with dpt_core.invocation("summary", tags=TAGS["summary"]) as inv:
            inv.read(catalog, zeropoints)
            summary = workdir / "summary.txt"
            summary.write_text(
                f"{len(made)} cutouts, zero point {zeropoints.read_text().strip()}\n"
            )
            inv.write(summary)
        try:
            with dpt_core.invocation(
                "report", parameters={"format": "html"}, tags=TAGS["report"]
            ) as inv:
                inv.read(catalog)
                report = workdir / "report.html"
                report.write_text("<h1>partial report</h1>\n")
                inv.write(report)
                raise RuntimeError(
                    "photometry zero point missing for 3C 273\nsee the calibration log for night 2025-03-01"
                )
        except RuntimeError:
            pass


def catalog_step(workdir: Path) -> None:
    import dpt_core

    observations, catalog = workdir / "observations.csv", workdir / "catalog.json"
    release = os.environ["SURVEY_RELEASE"]
    with dpt_core.invocation(
        "catalog", parameters={"release": release}, tags={**TAGS["catalog"], "release": release}
    ) as inv:
        inv.read(observations)
        with observations.open() as handle:
            rows = list(csv.DictReader(handle))
        catalog.write_text(
            json.dumps({"release": os.environ["SURVEY_RELEASE"], "sources": rows}, indent=1)
        )
        inv.write(catalog)


def openlineage(workdir: Path, url: str) -> None:
    """Two more producers, through the ``dpt serve`` at ``url``: OpenLineage events sent by
    the openlineage-python client's HTTP transport, as dbt-ol and a Spark job send them."""
    import datetime as dt
    import uuid

    from openlineage.client import OpenLineageClient
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        error_message_run,
        job_type_job,
        processing_engine_run,
    )
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    import dpt_core

    client = OpenLineageClient(transport=HttpTransport(HttpConfig.from_dict({"url": url})))
    catalog = workdir / "catalog.json"
    read_catalog = InputDataset(
        namespace="file",
        name=str(catalog),
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=dpt_core.hash_file(catalog)
            )
        },
    )
    table = OutputDataset(namespace="postgres://warehouse:5432", name="survey.public.sources")
    lake = OutputDataset(namespace="s3://survey-lake", name="sources/release=dr1")
    when = dt.datetime.now(dt.UTC)
    producer = "https://github.com/OpenLineage/OpenLineage/tree/1.30.0/integration/dbt"
    dbt_run = str(uuid.uuid4())
    dbt_job = Job(
        namespace="dbt",
        name="survey.sources",
        facets={
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="DBT", jobType="MODEL"
            )
        },
    )
    spark_run, spark_retry = str(uuid.uuid4()), str(uuid.uuid4())
    spark_job = Job(namespace="spark", name="sources_to_lake")
    engine = processing_engine_run.ProcessingEngineRunFacet(version="3.5.1", name="spark")
    read_table = InputDataset(namespace=table.namespace, name=table.name)
    failure = error_message_run.ErrorMessageRunFacet(
        message="java.lang.OutOfMemoryError: Java heap space\n\tat org.apache.spark.sql",
        programmingLanguage="JAVA",
    )
    steps = [
        (RunState.START, 0, Run(runId=dbt_run), dbt_job, [read_catalog], []),
        (RunState.COMPLETE, 4, Run(runId=dbt_run), dbt_job, [read_catalog], [table]),
        (RunState.START, 5, Run(runId=spark_run, facets={"processing_engine": engine}),
         spark_job, [read_table], []),
        (RunState.FAIL, 9, Run(runId=spark_run, facets={"processing_engine": engine,
                                                       "errorMessage": failure}),
         spark_job, [read_table], []),
        (RunState.START, 10, Run(runId=spark_retry, facets={"processing_engine": engine}),
         spark_job, [read_table], []),
        (RunState.COMPLETE, 15, Run(runId=spark_retry, facets={"processing_engine": engine}),
         spark_job, [read_table], [lake]),
    ]  # fmt: skip
    for state, seconds, run, job, inputs, outputs in steps:
        event = RunEvent(
            eventType=state,
            eventTime=(when + dt.timedelta(seconds=seconds)).isoformat(),
            run=run,
            job=job,
            producer=producer,
            inputs=inputs,
            outputs=outputs,
        )
        client.emit(event)


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    exposures, observations = workdir / "exposures.csv", workdir / "observations.csv"
    write_exposures(exposures, 12)
    (workdir / "zeropoints.txt").write_text("25.10\n")
    dpt("run", "--name", "ingest", "-i", str(exposures), "-o", str(observations), "--",
        sys.executable, "-c", INGEST, str(exposures), str(observations))  # fmt: skip
    python_step(
        workdir,
        "catalog",
        SURVEY_RELEASE="dr2",
        SURVEY_DB_PASSWORD=SECRETS["SURVEY_DB_PASSWORD_DR2"],
    )
    python_step(
        workdir, "nightly", SURVEY_RELEASE="dr1", SURVEY_DB_PASSWORD=SECRETS["SURVEY_DB_PASSWORD"]
    )
    xss = workdir / XSS_FILE
    code = dpt(
        "run", "--name", XSS_JOB, "-i", str(workdir / "catalog.json"), "-o", str(xss), "--",
        sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('x\\n'); sys.exit(3)", str(xss),
        check=False,
    )  # fmt: skip
    assert code == 3, code
    archive = workdir / "archive.tar"
    dpt("run", "--name", "archive", "-i", str(observations), "-o", str(archive), "--",
        sys.executable, "-c", "import sys; open(sys.argv[1], 'wb').write(b'tar')", str(archive),
        f"--password={SECRETS['COMMAND_PASSWORD']}")  # fmt: skip
    if os.environ.get("DPT_TEST_SERVER_URL"):
        openlineage(workdir, os.environ["DPT_TEST_SERVER_URL"])
    # The zero points are revised: the summary made from them is now stale.
    (workdir / "zeropoints.txt").write_text("25.12\n")


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve()
    if len(sys.argv) > 2 and sys.argv[2] == "nightly":
        nightly(target)
    elif len(sys.argv) > 2 and sys.argv[2] == "catalog":
        catalog_step(target)
    else:
        main(target)
