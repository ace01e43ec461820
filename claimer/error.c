/*
 * error.c: the descriptions of claimer's error codes.  The CL_ERRNO_MAP list
 * in claimer.h is the one source: it generates the cl_errno_t enum there and
 * both switches here, so a code cannot exist without a name and a message.
 * Codes from -1 to -999 are taken as negated errno values (our own start
 * below -1000 to leave them room), because calls that wrap the C library
 * or libuv may pass those through; everything else that the list does not
 * name is "unknown".  Every string returned is
 * static, so both functions are safe from any thread.
 */
#include <errno.h>
#include <string.h>

#include "claimer/claimer.h"

/* The lowest negated errno value we recognise: every system's errno values
 * are far smaller than 999, and -1000 and below belong to CL_ERRNO_MAP. */
#define ERRNO_RANGE_MIN (-999)

/* glibc 2.32 added errno descriptions and names that are static strings
 * (strerror() may format into a buffer for unknown values, so it is not
 * usable here); they need _GNU_SOURCE, which the build defines.  Elsewhere
 * we say only "system error". */
#if defined(_GNU_SOURCE) && defined(__GLIBC__) &&                              \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define HAVE_STRERRORDESC_NP 1
#endif

static int is_errno_range(int err) { return err < 0 && err >= ERRNO_RANGE_MIN; }

/* Returns the static description of err.  0 is "success"; a negated errno
 * value gets the C library's text when it has one that is static. */
const char *cl_strerror(int err) {
  switch (err) {
#define CL__ERR_STR(name, value, msg)                                          \
  case CL_E##name:                                                             \
    return msg;
    CL_ERRNO_MAP(CL__ERR_STR)
#undef CL__ERR_STR
  case 0:
    return "success";
  default:
    break;
  }
  if (is_errno_range(err)) {
#ifdef HAVE_STRERRORDESC_NP
    const char *desc = strerrordesc_np(-err);
    if (desc != NULL)
      return desc;
#endif
    return "system error";
  }
  return "unknown error";
}

/* Returns the static name of err: "CL_E" plus the name in CL_ERRNO_MAP,
 * "CL_OK" for 0, the errno name (such as "ENOENT") for a negated errno value
 * when the C library knows it, and "CL_EUNKNOWN" otherwise. */
const char *cl_err_name(int err) {
  switch (err) {
#define CL__ERR_NAME(name, value, msg)                                         \
  case CL_E##name:                                                             \
    return "CL_E" #name;
    CL_ERRNO_MAP(CL__ERR_NAME)
#undef CL__ERR_NAME
  case 0:
    return "CL_OK";
  default:
    break;
  }
  if (is_errno_range(err)) {
#ifdef HAVE_STRERRORDESC_NP
    const char *name = strerrorname_np(-err);
    if (name != NULL)
      return name;
#endif
    return "CL_ESYSTEM";
  }
  return "CL_EUNKNOWN";
}
