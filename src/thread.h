/* What every pipeline thread shares: how it is started (the broker's asynchronous signals stay on
 * the broker's threads), how it announces itself (a name an admin sees in top -H, and a lower
 * scheduling priority: the broker's main thread serves every client, so when the cores are busy it
 * should win them; the journal absorbs the backlog and the pipeline catches up when load drops),
 * and the two clocks. */
#ifndef IOTPIPE_THREAD_H
#define IOTPIPE_THREAD_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define THREAD_NICE 10

/* main thread (or a pipeline thread): pthread_create with SIGHUP, SIGTERM and the like blocked in the new thread; returns
 * pthread_create's result */
int thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);

/* the calling thread, at its start */
void thread_background(const char *name);

/* any thread */
static inline int64_t clock_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* any thread: wall-clock ms since the epoch */
static inline int64_t clock_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
