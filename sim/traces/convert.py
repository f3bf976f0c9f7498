"""Convert a throughput log to a Mahimahi trace (aqmllm_sim/traces.py does the work).

    python sim/traces/convert.py mbps LOG OUT.mahimahi --start-s 20 --duration-s 90 \
        [--excerpt sources/NAME.tsv] [--scale 1]
    python sim/traces/convert.py gnettrack LOG.csv OUT.mahimahi --start-s 600 --duration-s 30

LOG is a published throughput log (formats in aqmllm_sim/traces.py); the window
[start, start + duration) s is cut from it and re-timed from 0. --excerpt also writes
that window as a two-column `time_s mbps` log, so that the committed trace can be
rebuilt from the committed excerpt with the `mbps` format (sim/traces/README.md lists
every trace, its source and the command that made it).
"""

from __future__ import annotations

from pathlib import Path

import click

from aqmllm_sim.traces import (
    FORMATS,
    TraceError,
    mahimahi_text,
    mean_mbps,
    opportunities,
    read,
    read_mbps,
    window,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("fmt", type=click.Choice(FORMATS))
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--start-s", type=float, default=0.0, show_default=True)
@click.option("--duration-s", type=float, required=True)
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="multiply every rate (1: the log as measured)")
@click.option("--excerpt", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the window as a `time_s mbps` log")
def main(fmt: str, log: Path, out: Path, start_s: float, duration_s: float, scale: float,
         excerpt: Path | None) -> None:
    try:
        # The trace is built from the window as the excerpt writes it (ms, 1e-6 Mbit/s),
        # so that the excerpt rebuilds it exactly.
        text = "".join(f"{t:.3f} {r:.6f}\n" for t, r in window(read(log, fmt), start_s,
                                                               duration_s))
        times = opportunities(read_mbps(text, "window"), scale)
    except TraceError as e:
        raise click.ClickException(str(e)) from e
    if excerpt is not None:
        excerpt.write_text(text)
    out.write_text(mahimahi_text(times))
    click.echo(f"{out}: {len(times)} opportunities over {times[-1] / 1000:g} s, "
               f"mean {mean_mbps(times):.2f} Mbit/s")


if __name__ == "__main__":
    main()
