"""A loaded host, for the deployment's ``local+slow`` variant (on PYTHONPATH with
DPT_TEST_SLOW_HOST=1 in every process of the deployment).

Under the parallel test suite a process's writer thread can wait a long while for the
CPU after a task appended its events, and the database answers slowly. Those delays are
made here, in every Airflow and dpt process: a random 0 - 0.3 s before each background
writer claims its spool file, and 0.1 s before each write to the database. They widen
the windows in which one process's replay and another's writer meet in the spool: with
them the deployment reproduced, 2 runs of 2, a succeeded try recorded as crashed
(fixed in e3c6a39), which the suite had hit once in four runs without them.
"""

import os

if os.environ.get("DPT_TEST_SLOW_HOST"):
    import random
    import time

    from dpt_core.spool import Spool
    from dpt_core.store.plugin import Store

    def _slowly(method, wait):
        def slow(*args, **kwargs):
            time.sleep(wait())
            return method(*args, **kwargs)

        return slow

    Spool.claim_own = _slowly(Spool.claim_own, lambda: random.uniform(0.0, 0.3))
    Store.record = _slowly(Store.record, lambda: 0.1)
    Store.record_many = _slowly(Store.record_many, lambda: 0.1)
