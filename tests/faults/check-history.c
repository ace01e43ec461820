/*
 * check-history.c: runs the fault checker (checker.h) over the files one
 * run of the fault harness recorded, prints the verdict as a table, and
 * writes it as JSON when asked.  Exit status: 0 PASS, 1 FAIL, 2 bad input
 * (or a usage error, or a report that could not be written).
 *
 *   check-history DIR [--json FILE]     (FILE "-": standard output)
 */
#include <stdio.h>
#include <string.h>

#include "checker.h"

static int usage(void) {
  fprintf(stderr, "usage: check-history DIR [--json FILE]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *dir = NULL, *json = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
      json = argv[++i];
    else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage();
      return 0;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0')
      return usage();
    else if (!dir)
      dir = argv[i];
    else
      return usage();
  }
  if (!dir)
    return usage();

  fc_report_t r;
  char err[1024];
  int rc = fc_check(dir, &r, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "check-history: %s\n", err);
    return 2;
  }
  bool to_stdout = json && strcmp(json, "-") == 0;
  /* With the JSON on standard output the table goes to standard error, so
   * that the output stays one JSON object. */
  fc_report_print(to_stdout ? stderr : stdout, &r);
  int status = r.pass ? 0 : 1;
  if (json) {
    FILE *f = to_stdout ? stdout : fopen(json, "w");
    if (!f) {
      perror(json);
      status = 2;
    } else {
      if (fc_report_json(f, &r) != 0) {
        fprintf(stderr, "check-history: could not write the JSON report\n");
        status = 2;
      }
      if (f != stdout && fclose(f) != 0) {
        perror(json);
        status = 2;
      }
    }
  }
  fc_report_free(&r);
  return status;
}
