"""Example Airflow DAG: a fleet run of Groundbreak every two weeks — plan → run → aggregate.

Each task calls the ``groundbreak`` CLI on the Airflow worker; the heavy work runs on the Dask
cluster named by the ``groundbreak_scheduler`` Airflow Variable (``tcp://scheduler:8786``). The
ledger and the part files live on storage every node sees (a shared disk here; parts may also be
an object-store URL). ``fleet run`` resumes: a retried Airflow task continues the same ledger and
loses and duplicates nothing; exit code 3 (finished with failed chips) fails the task so an
operator looks, ``fleet retry`` re-queues them.

Copy this file into the DAGs folder and set the Variables ``groundbreak_root`` (shared folder),
``groundbreak_aois`` (AOI file), ``groundbreak_scenes`` (scene catalog or glob) and
``groundbreak_scheduler``.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

ROOT = "{{ var.value.get('groundbreak_root', '/shared/groundbreak') }}"
RUN = ROOT + "/runs/{{ ds_nodash }}"
LEDGER = RUN + "/run.ledger"

with DAG(
    dag_id="groundbreak_fleet",
    description="Groundbreak fleet run over every AOI: plan, run on the Dask cluster, merge",
    schedule=dt.timedelta(days=14),
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["groundbreak"],
) as dag:
    plan = BashOperator(
        task_id="plan",
        bash_command=(
            "mkdir -p " + RUN + " && "
            "( test -f " + LEDGER + " || groundbreak fleet plan"
            " --aois {{ var.value.groundbreak_aois }} --scenes {{ var.value.groundbreak_scenes }}"
            " --ledger " + LEDGER + " --threads 1 --events jsonl )"
        ),
    )
    run = BashOperator(
        task_id="run",
        bash_command="groundbreak fleet run --ledger " + LEDGER + " --scheduler {{ var.value.groundbreak_scheduler }}"
                     " --events jsonl",
        execution_timeout=dt.timedelta(hours=36),
    )
    merge = BashOperator(
        task_id="aggregate",
        bash_command="groundbreak fleet aggregate --ledger " + LEDGER + " --out " + RUN + "/detections.gpkg"
                     " --overwrite && groundbreak fleet cost --ledger " + LEDGER + " --csv " + RUN + "/cost.csv",
    )
    plan >> run >> merge
