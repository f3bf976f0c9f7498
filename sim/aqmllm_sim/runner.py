"""Run one scenario under one policy with the ns-3 runner (build/aqm-sim)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from aqm_bridge._ffi import REPO_ROOT

from .scenario import Scenario

RUNNER = REPO_ROOT / "build" / "aqm-sim"


class RunError(Exception):
    pass


def run(scenario: Scenario, policy: str, out_dir: Path | None = None) -> dict[str, Any]:
    """Metrics of one run (see sim/README.md); also written to out_dir/result.json."""
    if not RUNNER.is_file():
        raise RunError(f"{RUNNER} missing: `make` builds it when the ns3 wheel is installed "
                       "(pip install '.[sim]')")
    config = scenario.flat(policy)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = Path(tmp, "scenario.txt"), Path(tmp, "result.json")
        cfg.write_text(config)
        r = subprocess.run([str(RUNNER), str(cfg), str(out)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RunError(f"aqm-sim failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        result = json.loads(out.read_text())
    result["scenario"] = scenario.name
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "result.json").write_text(json.dumps(result, indent=2))
        (out_dir / "scenario.txt").write_text(config)
    return result
