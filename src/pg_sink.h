/* The PostgreSQL sink: an outbox reader that writes every output record into the hot store through a
 * pool of non-blocking libpq connections (binary COPY, ON CONFLICT on replays), moving its cursor on
 * COMMIT only. */
#ifndef IOTPIPE_PG_SINK_H
#define IOTPIPE_PG_SINK_H

#include <stddef.h>

#include "config.h"
#include "journal.h"
#include "metrics.h"

struct pg_sink;

/* main thread at start: starts the sink thread; PostgreSQL unreachable is not an error (it retries) */
struct pg_sink *pg_sink_start(const struct config *cfg, struct journal_reader *reader, struct metrics *m,
		char *err, size_t errlen);
/* main thread at stop: commits what is in flight for a bounded time, persists the cursor */
void pg_sink_stop(struct pg_sink *s);

#endif
