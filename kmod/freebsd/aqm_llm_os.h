/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_llm_os.h: the kernel interfaces aqm_llm.c uses, from FreeBSD's
 * headers, or from the user-space shim of tests/freebsd when the glue is
 * compiled into the test harness (-DAQM_LLM_HARNESS).
 */

#ifndef AQM_LLM_OS_H
#define AQM_LLM_OS_H

#ifdef AQM_LLM_HARNESS
#include "shim.h"
#else
#include <sys/param.h>
#include <sys/systm.h>
#include <sys/conf.h>
#include <sys/kernel.h>
#include <sys/lock.h>
#include <sys/mutex.h>
#include <sys/malloc.h>
#include <sys/mbuf.h>
#include <sys/module.h>
#include <sys/proc.h>
#include <sys/queue.h>
#include <sys/rwlock.h>
#include <sys/socket.h>
#include <sys/sysctl.h>
#include <sys/time.h>
#include <sys/callout.h>
#include <machine/atomic.h>

#include <vm/vm.h>
#include <vm/vm_param.h>
#include <vm/pmap.h>
#include <vm/vm_extern.h>
#include <vm/vm_kern.h>
#include <vm/vm_object.h>
#include <vm/vm_page.h>
#include <vm/vm_pager.h>

#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/ip_fw.h>
#include <netinet/ip_dummynet.h>

#include "aqm_dn_compat.h"
#endif

#endif /* !AQM_LLM_OS_H */
