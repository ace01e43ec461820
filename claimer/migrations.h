/*
 * migrations.h: the shape of the SQL migrations that embed-sql compiles into
 * the library from the numbered SQL files in schema/.
 */
#ifndef CLAIMER_MIGRATIONS_H
#define CLAIMER_MIGRATIONS_H

typedef struct cl__migration {
  int version;
  const char *name; /* "001_init" */
  const char *sql;
} cl__migration_t;

extern const cl__migration_t cl__migrations[];
extern const int cl__migrations_count;

#endif
