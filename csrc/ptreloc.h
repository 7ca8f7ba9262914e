/*
 * ptreloc.h - the one header of the ptreloc C core.
 *
 * Conventions (mm/pagewalk.c style): functions return 0 on success or -errno; the core never
 * prints and never aborts.  PTR_RELOCATION is 1 unless the build defines PTRELOC_NO_RELOCATION.
 */
#ifndef PTRELOC_H
#define PTRELOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef PTRELOC_NO_RELOCATION
#define PTR_RELOCATION 0
#else
#define PTR_RELOCATION 1
#endif

#endif /* PTRELOC_H */
