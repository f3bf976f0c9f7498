"""Checks on build/aqm-host's JSON report that more than one test file makes."""

from __future__ import annotations

from typing import Any


def every_packet_decided(report: dict[str, Any]) -> None:
    """Each packet that came in was decided or is still queued; no verdict was malformed
    and the channel never failed."""
    assert report["decisions"] + sum(report["queued_at_end"]) == sum(report["pkts_in"])
    assert report["verdicts_bad"] == 0 and report["channel_errors"] == 0
