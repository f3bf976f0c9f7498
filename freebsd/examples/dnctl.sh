#!/bin/sh
# A 100 Mbit/s bottleneck under aqm_llm, with the dnctl(8) of FreeBSD 14.
kldload -n aqm_llm
dnctl pipe 1 config bw 100Mbit/s
dnctl sched 1 config pipe 1 type aqm_llm
dnctl queue 1 config sched 1
dnctl sched show 1
