#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define LOGQ_SLOTS 1024
#define LOGQ_LINE 480

struct logq_slot {
	enum ip_log_level level;
	char line[LOGQ_LINE];
};

/* Several threads log, one drains: a mutex is fine here (logging is never on a hot path), and the
 * main thread only ever trylocks it. */
static pthread_mutex_t logq_lock = PTHREAD_MUTEX_INITIALIZER;
static struct logq_slot logq[LOGQ_SLOTS];
static size_t logq_head, logq_len;
static _Atomic bool use_queue;
static _Atomic unsigned long dropped;

static const char *const level_names[] = {"error", "warning", "notice", "info", "debug"};

void log_use_queue(bool on)
{
	atomic_store(&use_queue, on);
}

/* any thread */
void ip_log(enum ip_log_level level, const char *fmt, ...)
{
	char line[LOGQ_LINE];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);

	if(!atomic_load(&use_queue)){
		fprintf(stderr, "%s: %s\n", level_names[level], line);
		return;
	}
	pthread_mutex_lock(&logq_lock);
	if(logq_len == LOGQ_SLOTS){
		pthread_mutex_unlock(&logq_lock);
		atomic_fetch_add(&dropped, 1);
		return;
	}
	struct logq_slot *s = &logq[(logq_head + logq_len) % LOGQ_SLOTS];
	s->level = level;
	memcpy(s->line, line, sizeof(line));
	logq_len++;
	pthread_mutex_unlock(&logq_lock);
}

/* main thread */
bool log_pop(enum ip_log_level *level, char *buf, size_t buflen)
{
	if(pthread_mutex_trylock(&logq_lock)) return false;
	if(logq_len == 0){
		pthread_mutex_unlock(&logq_lock);
		return false;
	}
	struct logq_slot *s = &logq[logq_head];
	*level = s->level;
	snprintf(buf, buflen, "%s", s->line);
	logq_head = (logq_head + 1) % LOGQ_SLOTS;
	logq_len--;
	pthread_mutex_unlock(&logq_lock);
	return true;
}

unsigned long log_dropped(void)
{
	return atomic_load(&dropped);
}
