/* Enqueues one item through the installed libclaimer alone. */
#include <claimer/claimer.h>
#include <stdio.h>

int main(int argc, char **argv) {
  cl_conn_t *c = NULL;
  cl_item_t item = {.item_id = argc > 2 ? argv[2] : "", .queue = "installed"};
  int rc = argc == 3 ? cl_conn_new(&c, argv[1]) : CL_EINVAL;
  if (rc == 0 && (rc = cl_conn_connect(c)) == 0)
    rc = cl_enqueue(c, &item, 1, NULL);
  printf("enqueued %d: %s\n", rc > 0 ? rc : 0, cl_strerror(rc < 0 ? rc : 0));
  cl_conn_free(&c);
  return rc < 0;
}
