/*
 * text.h: the one reading of UTF-8 and the one way of showing untrusted
 * text that libclaimer and the programs built on it share.  Input checks
 * (check.c), the YAML configuration (workers/support/config.c) and its
 * printer all decode with cl__utf8_decode(), call the same characters
 * control characters, refuse bad text with the same words and escape with
 * cl__escape(), so that a value one of them accepts or shows is never read
 * differently by another.  Every function is pure and thread-safe.
 */
#ifndef CLAIMER_TEXT_H
#define CLAIMER_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Returns the length (1 to 4) of the well-formed UTF-8 sequence that
 * starts at s[0], and its code point in *cp (cp may be NULL); returns 0,
 * leaving *cp alone, when len is 0 or the sequence is ill-formed: an
 * overlong form, a surrogate (U+D800..U+DFFF), a code point above
 * U+10FFFF, a sequence cut short by the end of s[0..len) or by a byte that
 * is not a continuation, a stray continuation byte, or a lead byte that
 * UTF-8 never uses (C0, C1, F5..FF).  The public cl_utf8_invalid_at() is
 * this, walked along a string. */
size_t cl__utf8_decode(const char *s, size_t len, uint32_t *cp);

/* Returns true for the code points that claimer calls control characters:
 * C0 (U+0000..U+001F), DEL (U+007F) and C1 (U+0080..U+009F).  C1 counts
 * because terminals act on some of it (U+009B is CSI), and names and
 * messages end up on terminals. */
bool cl__is_control(uint32_t cp);

/* cl__check_text() flags. */
enum {
  /* A newline is allowed (a command given as a YAML block runs each line);
   * every other control character, carriage return and tab among them, is
   * still refused. */
  CL__TEXT_LINES = 1u << 0,
};

/* Checks the rule for free text (item ids, worker names, commands, URLs):
 * 1 to max bytes of valid UTF-8 without control characters.  Returns 0, or
 * CL_EINVAL with one of these in err (bounded by errlen; nothing written
 * when err is NULL), each led by what and a space when what is not NULL:
 * "is missing" (s is NULL), "is empty", "is N bytes; the limit is MAX",
 * "contains a control character at byte N", "is not valid UTF-8 (byte
 * N)".  Offsets are 0-based; of a control character and a bad sequence,
 * the one that comes first is reported. */
int cl__check_text(const char *what, const char *s, size_t max, unsigned flags,
                   char *err, size_t errlen);

/* cl__escape() flags. */
enum {
  /* '"' and '\' get a backslash, for text that goes between double
   * quotes. */
  CL__ESC_QUOTES = 1u << 0,
  /* Escapes name code points, not bytes, for a reader that turns "\xNN"
   * and "\uNNNN" back into characters (a YAML double-quoted scalar): a
   * control character is "\xNN" of its code point (U+009B is "\x9b", not
   * "\xc2\x9b"), and the non-characters U+FFFE and U+FFFF are "\uNNNN",
   * since YAML refuses all of those raw except NEL (U+0085), which it
   * folds into a space.  A byte that is not UTF-8 has no such spelling and
   * stays "\xNN" of the byte, which such a reader takes for U+00NN. */
  CL__ESC_CODE_POINTS = 1u << 1,
};

/* The out size that holds the escape of n bytes uncut: no byte becomes
 * more than 4, and "..." and the NUL need 4 more. */
#define CL__ESC_SIZE(n) (4 * (size_t)(n) + 4)

/* Writes s[0..len) into out (outlen bytes) as text that is safe to print:
 * valid characters stay as they are, control characters become "\xNN"
 * (each byte of a C1 control, or its code point with
 * CL__ESC_CODE_POINTS), and every byte that starts no valid sequence
 * becomes "\xNN" alone.  At most max bytes of s are shown; when s is cut
 * (by max or by outlen), "..." marks the cut, which falls between
 * characters.  out is always NUL-terminated when outlen is not 0.  Returns
 * the length written, without the NUL. */
size_t cl__escape(char *out, size_t outlen, const char *s, size_t len,
                  size_t max, unsigned flags);

/* Writes a formatted message into err, bounded by errlen; does nothing
 * when err is NULL or errlen is 0, so that every check can be called just
 * for its verdict. */
void cl__msg(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns a malloc'd copy of s (NULL: "") cut to at most max bytes on a
 * character boundary, each byte of an invalid UTF-8 sequence replaced by
 * '?': text PostgreSQL will take, from a source that may send anything
 * (a handler's stderr, a sink's answer).  NULL when out of memory. */
char *cl__clean_text(const char *s, size_t max);

#endif
