/* The device registry from PostgreSQL (tables devices and sensors, conf/schema.sql), for when
 * plugin_opt_registry_file is unset and plugin_opt_pg_conninfo is set.
 *
 * A loader thread with its own connection LISTENs on iotpipe_registry (the schema's triggers
 * NOTIFY it on every change to either table), reads both tables into a new snapshot at start and
 * after every change (changes within 50 ms are read once), and publishes it into a regslot, the
 * same hand-off the file registry uses: the processor takes the newest with regslot_take().
 *
 * Each snapshot loaded is also written to a cache file. At start, the cache is used until
 * PostgreSQL answers; with neither, the processor has no registry and devices pass unenriched
 * (flagged), as without registry_file: unknown_devices applies once a registry is loaded. A lost
 * connection keeps the last snapshot and reconnects with backoff; on reconnect the tables are read
 * again, since changes made meanwhile sent no notification to us. */
#ifndef IOTPIPE_PGREG_H
#define IOTPIPE_PGREG_H

#include <stddef.h>
#include <stdint.h>

#include "regwatch.h"

struct pgreg;

struct pgreg_stats {
	uint64_t loads;      /* snapshots published from PostgreSQL */
	uint64_t failures;   /* connection or query failures */
	uint64_t skipped;    /* devices left out of the newest snapshot for invalid rows */
	uint64_t version;    /* registry_version() of the newest snapshot */
};

/* main thread at start. Publishes the cache (cache_path, NULL: none) if there is one, starts the
 * loader thread and waits up to wait_ms for its first answer from PostgreSQL, so that a broker
 * starting next to a running database enriches its first message. PostgreSQL unreachable is no
 * error; an unparsable conninfo or no thread is (NULL, err set). */
struct pgreg *pgreg_start(const char *conninfo, const char *cache_path, int wait_ms, char *err, size_t errlen);

/* the slot the processor takes snapshots from (regslot_take, processor thread only) */
struct regslot *pgreg_slot(struct pgreg *g);

/* any thread, signal handlers included: read the tables again now (SIGHUP) */
void pgreg_request_reload(struct pgreg *g);

/* any thread */
void pgreg_stats(struct pgreg *g, struct pgreg_stats *st);

/* main thread at stop, after the processor stopped: joins the thread, frees every snapshot.
 * NULL is fine. */
void pgreg_stop(struct pgreg *g);

/* The SQL a snapshot is read with, and the JSON a snapshot is cached as (registry_parse_json
 * reads it back). Exposed for tests. */
const char *pgreg_load_sql(void);
char *pgreg_to_json(const struct ip_registry *r);

#endif
