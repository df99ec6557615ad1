/* Logging from any thread. Mosquitto's logger is main-thread only, so every line goes through a
 * bounded queue that the plugin drains into mosquitto_log_printf on MOSQ_EVT_TICK. Without a
 * broker (tools, unit tests) lines go to stderr. */
#ifndef IOTPIPE_LOG_H
#define IOTPIPE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum ip_log_level {
	IP_LOG_ERR,
	IP_LOG_WARNING,
	IP_LOG_NOTICE,
	IP_LOG_INFO,
	IP_LOG_DEBUG,
};

/* any thread */
void ip_log(enum ip_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Route lines to the queue (true, the plugin) or to stderr (false, the default). */
void log_use_queue(bool on);

/* main thread: pop one queued line; false when empty. */
bool log_pop(enum ip_log_level *level, char *buf, size_t buflen);

/* Lines lost because the queue was full (they are counted, never block the caller). */
unsigned long log_dropped(void);

#endif
