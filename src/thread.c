#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "thread.h"

int thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	/* synchronous faults stay deliverable; everything else is the broker's to handle */
	sigset_t block, old;
	sigfillset(&block);
	sigdelset(&block, SIGSEGV);
	sigdelset(&block, SIGBUS);
	sigdelset(&block, SIGFPE);
	sigdelset(&block, SIGILL);
	sigdelset(&block, SIGABRT);
	pthread_sigmask(SIG_SETMASK, &block, &old);
	int e = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return e;
}

void thread_background(const char *name)
{
	pthread_setname_np(pthread_self(), name);   /* at most 15 characters */
	/* Linux applies a nice value per thread when given the thread id. */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), THREAD_NICE);
}
