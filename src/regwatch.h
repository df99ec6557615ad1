/* Registry loading off the main thread, and the hand-off of snapshots to the processor.
 *
 * regslot is the hand-off alone: one loader publishes sealed snapshots, one reader takes the
 * newest, both without locks. Every snapshot source (the file watcher below, the PostgreSQL loader)
 * embeds one. regwatch is the file source: a thread that reloads registry_file when it changes or
 * when asked (SIGHUP). */
#ifndef IOTPIPE_REGWATCH_H
#define IOTPIPE_REGWATCH_H

#include <stdatomic.h>
#include <stdint.h>

#include "registry.h"

/* Ownership: a published snapshot belongs to the slot until the reader takes it; the taken one
 * belongs to the reader until it takes a newer one, which frees it. A snapshot published while an
 * older one is still untaken replaces it (the reader only ever wants the newest). */
struct regslot {
	_Atomic(struct ip_registry *) pending;   /* published, not yet taken */
	struct ip_registry *held;                /* the reader's: the one it is using */
};

/* before either side runs */
void regslot_init(struct regslot *s);

/* loader thread: seals reg and makes it the newest; the slot owns it from here. */
void regslot_publish(struct regslot *s, struct ip_registry *reg);

/* processor thread (the one reader): the newest snapshot, NULL before the first publish. Taking a
 * newer one frees the one returned before, so the caller must hold no pointer into it any more.
 * Never blocks; when nothing is new it is one relaxed load. */
const struct ip_registry *regslot_take(struct regslot *s);

/* after both sides have stopped: frees what the slot and the reader hold. */
void regslot_destroy(struct regslot *s);


struct regwatch;

struct regwatch_stats {
	uint64_t loads;      /* snapshots published, the first one included */
	uint64_t failures;   /* reloads refused (unreadable or invalid file); the old snapshot stayed */
	uint64_t version;    /* registry_version() of the newest published snapshot */
};

/* main thread, at plugin start: loads path once synchronously, then starts the loader thread that
 * reloads it when the file changes (inotify on its directory, so rename-replacing editors are seen
 * at once, and a stat of path every poll_ms, default 1000 when <= 0, for what inotify misses:
 * symlink swaps, network file systems) or when regwatch_request_reload() asks. A file written
 * again with the same bytes is not reloaded unless requested. NULL with err set
 * ("registry_file <path>: <why>") when the file cannot be loaded or the thread cannot start. */
struct regwatch *regwatch_start(const char *path, int poll_ms, char *err, size_t errlen);

/* any thread, also a signal handler: asks for a reload even if the file looks unchanged. Never
 * blocks. */
void regwatch_request_reload(struct regwatch *w);

/* processor thread (the one reader): the newest snapshot, never NULL. The snapshot returned by the
 * previous call is freed when a newer one is returned: keep no pointers into it across calls
 * (compare registry_version() to notice the change). Never blocks. */
const struct ip_registry *regwatch_current(struct regwatch *w);

/* main thread at start: the hand-off the processor takes snapshots from (regslot_take on it is
 * regwatch_current) */
struct regslot *regwatch_slot(struct regwatch *w);

/* any thread: counters for logs and $SYS metrics. */
void regwatch_stats(struct regwatch *w, struct regwatch_stats *st);

/* main thread, at plugin stop, after the processor thread has stopped: joins the loader thread
 * and frees every snapshot. NULL is fine. */
void regwatch_stop(struct regwatch *w);

#endif
