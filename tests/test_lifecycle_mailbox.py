"""The parameter mailbox numbers each request once, whoever asks (aqm_chan_lib.c)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from aqm_bridge._ffi import REPO_ROOT

#: Threads posting requests at once on one region, each REQUESTS times, recording the
#: numbers they were given; the program fails when two got the same number or the
#: mailbox's count is not the number of requests.
RACE_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "aqm_channel.h"

uint32_t aqm_chan_request_params(void *, const void *);

#define THREADS 2
#define REQUESTS 2000000

static struct aqm_chan ch;
static uint32_t got[THREADS][REQUESTS];
static struct aqm_params p;

static void *
post(void *arg)
{
	uint32_t (*mine)[REQUESTS] = arg;
	int i;

	for (i = 0; i < REQUESTS; i++)
		(*mine)[i] = aqm_chan_request_params(&ch, &p);
	return (NULL);
}

int
main(void)
{
	static uint8_t seen[THREADS * REQUESTS + 1];
	pthread_t t[THREADS];
	uint64_t size = aqm_chan_region_size(64, 64), dup = 0;
	void *base = aligned_alloc(64, size);
	int i, j;

	memset(base, 0, size);
	if (aqm_chan_init(&ch, base, size, 64, 64) != AQM_CHAN_OK)
		return (2);
	for (i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, post, &got[i]);
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < THREADS; i++)
		for (j = 0; j < REQUESTS; j++) {
			uint32_t n = got[i][j];
			if (n == 0 || n > THREADS * REQUESTS || seen[n]++)
				dup++;
		}
	printf("duplicates %llu, param_req %u\n", (unsigned long long)dup,
		ch.ctrl->param_req);
	return (dup != 0 || ch.ctrl->param_req != THREADS * REQUESTS);
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_concurrent_requesters_never_share_a_request_number(tmp_path: Path) -> None:
    src = tmp_path / "race.c"
    src.write_text(RACE_C)
    exe = tmp_path / "race"
    subprocess.run(["cc", "-O2", "-pthread", f"-I{REPO_ROOT / 'bridge'}",
                    f"-I{REPO_ROOT / 'kmod/core'}", str(src),
                    str(REPO_ROOT / "bridge/aqm_chan_lib.c"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
