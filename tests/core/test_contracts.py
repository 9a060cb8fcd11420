"""The deal contracts are live under test (DPT_CONTRACTS=1) and absent otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import deal
import pytest

from dpt_core import contracts, environment, uri


def test_contracts_are_checked_under_test():
    assert contracts.ENABLED
    with pytest.raises(deal.PreContractError, match="uri must be a str"):
        uri.uri_to_path(5)  # type: ignore[arg-type]
    with pytest.raises(deal.PostContractError):
        # a fingerprint post-condition guards the output format, so break the function's output
        deal.post(lambda r: len(r) == 64)(lambda: "short")()
    assert (
        len(
            environment.fingerprint(
                python_version="3",
                implementation="C",
                platform="p",
                hostname="h",
                user="u",
                distributions=(),
                variables=(),
            )
        )
        == 64
    )


def test_production_imports_no_deal():
    code = "import sys, dpt_core.uri, dpt_core.hashing, dpt_core.environment; print('deal' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "DPT_CONTRACTS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"
