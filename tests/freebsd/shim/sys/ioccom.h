/* Harness: FreeBSD's <sys/ioccom.h> macros come from Linux's <sys/ioctl.h>. */
#include <sys/ioctl.h>
