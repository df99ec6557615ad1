#include <stdio.h>

#include "pg_sink.h"

struct pg_sink *pg_sink_start(const struct config *cfg, struct journal_reader *reader, struct metrics *m,
		char *err, size_t errlen)
{
	snprintf(err, errlen, "plugin_opt_pg_conninfo: the PostgreSQL sink is not built yet");
	return NULL;
}

void pg_sink_stop(struct pg_sink *s)
{
}
