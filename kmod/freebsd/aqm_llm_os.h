/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_llm_os.h: the kernel interfaces aqm_llm.c uses, from FreeBSD's
 * headers, or from the user-space shim of tests/freebsd when the glue is
 * compiled into the test harness (-DAQM_LLM_HARNESS).
 *
 * Dummynet's scheduler interface is private (sys/netpfil/ipfw): with the
 * source tree (-DAQM_LLM_WITH_SRC, set by the Makefile when it finds it)
 * its own headers are used; without it, compat/aqm_dn_compat.h declares
 * the same layouts.  Its size and offset assertions apply to both.
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
#include <net/ethernet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>

#ifdef AQM_LLM_WITH_SRC
/*
 * Dummynet's private headers, from the source tree, preceded by what they
 * need, in the order dummynet's own files (dn_sched_fifo.c,
 * dn_sched_fq_codel.c, ip_dummynet.c) include them; sys/ck.h for the
 * CK_LIST entries of dn_sched.h and dn_aqm.h, as ip_dummynet.c has it.
 */
#include <sys/ck.h>
#include <sys/socketvar.h>
#include <netinet/ip_var.h>
#include <netinet/ip_fw.h>
#include <netinet/ip_dummynet.h>
#include <net/vnet.h>
#include <netpfil/ipfw/ip_fw_private.h>
#include <netpfil/ipfw/dn_heap.h>
#include <netpfil/ipfw/ip_dn_private.h>
#include <netpfil/ipfw/dn_aqm.h>
#include <netpfil/ipfw/dn_sched.h>
#else
#include <netinet/ip_fw.h>
#include <netinet/ip_dummynet.h>
#endif
/* The layouts the module relies on: declared without the source tree, and
 * asserted (amd64) either way. */
#include "compat/aqm_dn_compat.h"
#endif

#endif /* !AQM_LLM_OS_H */
