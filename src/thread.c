#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "thread.h"

void thread_background(const char *name)
{
	pthread_setname_np(pthread_self(), name);   /* at most 15 characters */
	/* Linux applies a nice value per thread when given the thread id. */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), THREAD_NICE);
}
