/* Waiting in the unit tests of threaded modules: a condition polled until a deadline. The deadline
 * (DEADLINE_MS, defined by the test before it uses WAIT_FOR) only keeps a broken run from hanging;
 * no test asserts on how long anything took. The clocks are thread.h's. */
#ifndef IOTPIPE_TEST_WAIT_H
#define IOTPIPE_TEST_WAIT_H

#include <time.h>

#include "thread.h"

static inline void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

#define WAIT_FOR(cond) do { \
	int64_t wait_end_ = clock_mono_ms() + DEADLINE_MS; \
	while(!(cond)){ \
		if(clock_mono_ms() > wait_end_) fail_msg("timed out waiting for: %s", #cond); \
		nap_ms(5); \
	} \
} while(0)

#endif
