/*
 * text.c: how claimer reads UTF-8 and shows untrusted text, in one place:
 * one decoder written from the standard's table of well-formed sequences,
 * the rule that says which characters are control characters, the check
 * of free text built on both, and the escaper that every message and the
 * configuration printer write bad or foreign text with.  The library's
 * input checks and the programs' YAML configuration both use it, because
 * two readers of the same bytes that disagree (one accepting or showing
 * what the other refuses or reads differently) are where such bugs hide.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claimer/claimer.h"
#include "text.h"

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */

/* Follows table 3-7 of the Unicode standard (3.9, well-formed UTF-8 byte
 * sequences): the lead byte gives the length, and the range of the second
 * byte depends on the lead.  That range is what rules out the overlong
 * forms (E0 80..9F, F0 80..8F; C0 and C1 are never leads), the surrogates
 * (ED A0..BF) and the code points above U+10FFFF (F4 90..BF; F5..FF are
 * never leads), so no decoded value needs checking afterwards. */
size_t cl__utf8_decode(const char *s, size_t len, uint32_t *cp) {
  const unsigned char *p = (const unsigned char *)s;
  if (len == 0)
    return 0;
  unsigned c = p[0];
  unsigned lo = 0x80, hi = 0xBF;
  size_t n;
  uint32_t v;
  if (c < 0x80) {
    n = 1;
    v = c;
  } else if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    v = c & 0x0F;
    if (c == 0xE0)
      lo = 0xA0;
    else if (c == 0xED)
      hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    v = c & 0x07;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;
  } else {
    return 0;
  }
  if (n > len)
    return 0;
  if (n > 1 && (p[1] < lo || p[1] > hi))
    return 0;
  for (size_t k = 1; k < n; k++) {
    if ((p[k] & 0xC0) != 0x80)
      return 0;
    v = (v << 6) | (p[k] & 0x3F);
  }
  if (cp != NULL)
    *cp = v;
  return n;
}

/* A truncated sequence is reported at its first byte and a stray
 * continuation byte at itself, because that is where decoding stops. */
long cl_utf8_invalid_at(const char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    size_t n = cl__utf8_decode(s + i, len - i, NULL);
    if (n == 0)
      return (long)i;
    i += n;
  }
  return -1;
}

bool cl__is_control(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

void cl__msg(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* cl__msg() with what and a space in front when what is not NULL. */
__attribute__((format(printf, 4, 5))) static void
text_fault(char *err, size_t errlen, const char *what, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  size_t o = 0;
  if (what != NULL) {
    int w = snprintf(err, errlen, "%s ", what);
    o = w < 0 ? 0 : (size_t)w;
    if (o >= errlen)
      return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + o, errlen - o, fmt, ap);
  va_end(ap);
}

int cl__check_text(const char *what, const char *s, size_t max, unsigned flags,
                   char *err, size_t errlen) {
  if (s == NULL) {
    text_fault(err, errlen, what, "is missing");
    return CL_EINVAL;
  }
  size_t len = strlen(s);
  if (len == 0) {
    text_fault(err, errlen, what, "is empty");
    return CL_EINVAL;
  }
  if (len > max) {
    text_fault(err, errlen, what, "is %zu bytes; the limit is %zu", len, max);
    return CL_EINVAL;
  }
  for (size_t i = 0; i < len;) {
    uint32_t cp;
    size_t n = cl__utf8_decode(s + i, len - i, &cp);
    if (n == 0) {
      text_fault(err, errlen, what, "is not valid UTF-8 (byte %zu)", i);
      return CL_EINVAL;
    }
    if (cl__is_control(cp) && !(cp == '\n' && (flags & CL__TEXT_LINES))) {
      text_fault(err, errlen, what, "contains a control character at byte %zu",
                 i);
      return CL_EINVAL;
    }
    i += n;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Escaping                                                                  */

/* Returns true when cp, a decoded character, is not to be shown as it is
 * under flags. */
static bool hidden(uint32_t cp, unsigned flags) {
  if (cl__is_control(cp))
    return true;
  if (!(flags & CL__ESC_CODE_POINTS))
    return false;
  return cp == 0xFFFE || cp == 0xFFFF;
}

size_t cl__escape(char *out, size_t outlen, const char *s, size_t len,
                  size_t max, unsigned flags) {
  const unsigned char *p = (const unsigned char *)s;
  size_t o = 0, i = 0;
  if (outlen == 0)
    return 0;
  while (i < len) {
    /* The longest piece is a C1 control shown byte by byte: 8 bytes. */
    char piece[16];
    size_t plen = 0;
    uint32_t cp = 0;
    size_t used = cl__utf8_decode(s + i, len - i, &cp);
    if (used == 0) {
      plen = (size_t)snprintf(piece, sizeof piece, "\\x%02x", p[i]);
      used = 1;
    } else if ((flags & CL__ESC_QUOTES) && (cp == '"' || cp == '\\')) {
      piece[0] = '\\';
      piece[1] = (char)cp;
      plen = 2;
    } else if (!hidden(cp, flags)) {
      memcpy(piece, p + i, used);
      plen = used;
    } else if (flags & CL__ESC_CODE_POINTS) {
      plen = (size_t)snprintf(piece, sizeof piece,
                              cp < 0x100 ? "\\x%02x" : "\\u%04x", (unsigned)cp);
    } else {
      for (size_t k = 0; k < used; k++)
        plen += (size_t)snprintf(piece + plen, sizeof piece - plen, "\\x%02x",
                                 p[i + k]);
    }
    if (i + used > max || o + plen + 4 > outlen) {
      /* Stop here; "..." needs 3 bytes and the NUL one more. */
      if (o + 4 <= outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
      }
      break;
    }
    memcpy(out + o, piece, plen);
    o += plen;
    i += used;
  }
  out[o] = '\0';
  return o;
}

char *cl__clean_text(const char *s, size_t max) {
  if (s == NULL)
    s = "";
  size_t n = strlen(s);
  if (n > max) {
    n = max;
    /* Back off continuation bytes so no character is cut in two. */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
      n--;
  }
  char *out = malloc(n + 1);
  if (out == NULL)
    return NULL;
  memcpy(out, s, n);
  out[n] = '\0';
  for (long bad; (bad = cl_utf8_invalid_at(out, n)) >= 0;)
    out[bad] = '?';
  return out;
}
