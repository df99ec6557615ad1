/* Pipeline threads announce themselves here: a name an admin sees in top -H, and a lower
 * scheduling priority. The broker's main thread serves every client, so when the cores are busy it
 * should win them: the journal absorbs the backlog and the pipeline catches up when load drops. */
#ifndef IOTPIPE_THREAD_H
#define IOTPIPE_THREAD_H

#define THREAD_NICE 10

/* the calling thread, at its start */
void thread_background(const char *name);

#endif
